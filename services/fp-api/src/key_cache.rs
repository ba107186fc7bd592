//! Live API keys (`Bearer`) kept in memory, so most requests need no query to know their key.
//! Revocation still reaches every api process without waiting for a TTL: a trigger notifies
//! [`fp_store::key_revocations::CHANNEL`] at commit, and the listener drops the key here as soon as
//! the notification arrives (the api that revoked it drops it before answering). Rules:
//! - only live keys are cached, never "unknown" (a key issued later must work at once);
//! - while the listener is not listening, the cache is neither read nor filled: a revocation in
//!   that gap would go unheard;
//! - the TTL only bounds a notification that got lost; it is not how revocation works.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fp_store::identity::KeyOwner;
use fp_store::key_revocations::{self, Revoked};
use fp_store::notifications::Subscriber;
use moka::sync::Cache;
use uuid::Uuid;

/// What authentication needs of a live key.
#[derive(Debug, Clone, Copy)]
pub struct LiveKey {
    pub owner: KeyOwner,
    pub key_id: Uuid,
}

/// The cache, keyed by the key's SHA-256 ([`fp_domain::api_key::hash_key`]).
pub struct KeyCache {
    /// `None`: caching is off (`api.key_cache_capacity = 0`).
    entries: Option<Cache<Vec<u8>, LiveKey>>,
    /// Moves on every revocation and every loss of the listener, before the entry is dropped: a
    /// lookup that started before it may not fill the cache with what it read.
    epoch: AtomicU64,
    /// Whether revocations are being heard right now.
    listening: AtomicBool,
}

/// Leave to cache what one database lookup finds: the epoch before the lookup.
#[must_use]
pub struct Ticket {
    epoch: u64,
}

pub enum Lookup {
    Hit(LiveKey),
    /// Ask the database; the ticket, when there is one, lets [`KeyCache::insert`] keep the answer.
    Miss(Option<Ticket>),
}

impl KeyCache {
    pub fn new(capacity: u64, ttl: Duration) -> KeyCache {
        KeyCache {
            entries: (capacity > 0).then(|| {
                Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build()
            }),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The cached key for `hash`, or leave to cache what the database says.
    pub fn lookup(&self, hash: &[u8]) -> Lookup {
        let usable = self
            .entries
            .as_ref()
            .filter(|_| self.listening.load(Ordering::SeqCst));
        let Some(entries) = usable else {
            metrics::counter!("fp_api_key_cache_misses_total").increment(1);
            return Lookup::Miss(None);
        };
        // Read before the database is asked, so a revocation in between is seen by `insert`.
        let ticket = Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
        };
        match entries.get(hash) {
            Some(key) => {
                metrics::counter!("fp_api_key_cache_hits_total").increment(1);
                Lookup::Hit(key)
            }
            None => {
                metrics::counter!("fp_api_key_cache_misses_total").increment(1);
                Lookup::Miss(Some(ticket))
            }
        }
    }

    /// Caches a key the database found live after `ticket` was taken, unless a revocation was
    /// heard (or the listener lost) since: what was read may be revoked by now.
    pub fn insert(&self, ticket: Ticket, hash: Vec<u8>, key: LiveKey) {
        let Some(entries) = &self.entries else {
            return;
        };
        if !self.listening.load(Ordering::SeqCst)
            || self.epoch.load(Ordering::SeqCst) != ticket.epoch
        {
            return;
        }
        entries.insert(hash.clone(), key);
        // A revocation that moved the epoch between the check and the insert dropped its key
        // before this insert: drop it here instead.
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            entries.invalidate(&hash);
        }
    }

    /// Forgets a key that stopped being live. The epoch moves first, so a lookup in flight does
    /// not cache it again (see [`KeyCache::insert`]).
    pub fn revoked(&self, hash: &[u8]) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.invalidate(hash);
        }
    }

    fn forget_everything(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }
}

/// Revocations, as [`fp_store::notifications::follow`] hears them on
/// [`fp_store::key_revocations::CHANNEL`].
impl Subscriber for KeyCache {
    /// Revocations made while not listening were missed, so whatever was cached before goes first.
    fn started_listening(&self) {
        self.forget_everything();
        self.listening.store(true, Ordering::SeqCst);
    }

    fn notified(&self, payload: &str) {
        match key_revocations::parse_payload(payload) {
            Revoked::Key(hash) => self.revoked(&hash),
            Revoked::Unknown => self.forget_everything(),
        }
    }

    /// Revocations can no longer be heard: stop using the cache, then empty it.
    fn stopped_listening(&self) {
        self.listening.store(false, Ordering::SeqCst);
        self.forget_everything();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &[u8] = b"hash of a key";

    fn key() -> LiveKey {
        LiveKey {
            owner: KeyOwner::Platform,
            key_id: Uuid::nil(),
        }
    }

    fn listening_cache(capacity: u64) -> KeyCache {
        let cache = KeyCache::new(capacity, Duration::from_secs(3600));
        cache.started_listening();
        cache
    }

    fn ticket(cache: &KeyCache) -> Ticket {
        match cache.lookup(HASH) {
            Lookup::Miss(Some(ticket)) => ticket,
            Lookup::Miss(None) => panic!("the cache is not in use"),
            Lookup::Hit(_) => panic!("cached already"),
        }
    }

    fn is_cached(cache: &KeyCache) -> bool {
        matches!(cache.lookup(HASH), Lookup::Hit(_))
    }

    #[test]
    fn a_key_read_live_is_cached_until_revoked() {
        let cache = listening_cache(10);
        let ticket = ticket(&cache);
        cache.insert(ticket, HASH.to_vec(), key());
        assert!(is_cached(&cache));
        cache.revoked(HASH);
        assert!(!is_cached(&cache));
    }

    #[test]
    fn a_revocation_heard_during_the_lookup_keeps_its_answer_out() {
        let cache = listening_cache(10);
        let ticket = ticket(&cache);
        cache.revoked(HASH);
        cache.insert(ticket, HASH.to_vec(), key());
        assert!(!is_cached(&cache));
    }

    #[test]
    fn without_a_listener_the_cache_is_neither_read_nor_filled() {
        let cache = listening_cache(10);
        let before_the_loss = ticket(&cache);
        cache.insert(ticket(&cache), HASH.to_vec(), key());
        cache.stopped_listening();
        assert!(matches!(cache.lookup(HASH), Lookup::Miss(None)));
        // Listening again: what was cached before is gone, and so is a lookup's from before.
        cache.started_listening();
        assert!(!is_cached(&cache));
        cache.insert(before_the_loss, HASH.to_vec(), key());
        assert!(!is_cached(&cache));
    }

    #[test]
    fn a_capacity_of_zero_turns_the_cache_off() {
        let cache = listening_cache(0);
        assert!(!cache.is_enabled());
        assert!(matches!(cache.lookup(HASH), Lookup::Miss(None)));
    }
}
