//! Tenants' webhook configs, cached so that a delivery costs no database round trip while the
//! entry is fresh. A change to what an entry holds (the config, the tenant, an erasure) is
//! notified at commit on [`fp_store::config_changes::CHANNEL`]; every dispatcher drops that
//! tenant's entry when it hears it, so a saved config is used from the next delivery on. Rules:
//! - while changes are heard, an entry loaded while listening lives until its tenant's change is
//!   heard, or `max_age` at most (a bound for a notification that got lost);
//! - while they are not (the listener is lost, or not yet up), every entry lives `ttl` only;
//! - listening again, every entry is loaded again before use: changes made while not listening
//!   were missed (what it held still serves while the database is unreachable);
//! - a load that a change was heard during is not kept as fresh, since what it read may be the
//!   old config; it only replaces an older copy kept for an outage.
//!
//! Secrets are stored sealed (`fp_domain::secret_box`) and opened here with the master key. A secret
//! that does not open (another master key, a tampered row) never means "deliver unsigned": the
//! endpoint is marked unreadable and the dispatcher delivers nothing to it. A previous secret (one
//! replaced, still in its grace period) that does not open is only left out: the current secret
//! alone decides whether a delivery may go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::signing::{SigningSecrets, WebhookSecret};
use fp_store::config_changes::{self, Changed};
use fp_store::notifications::Subscriber;
use fp_store::{PgPool, StoreError};
use uuid::Uuid;

/// What a delivery needs to know about the tenant's endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub secret: Option<WebhookSecret>,
    /// A secret is set but did not open with this dispatcher's master key: nothing may be sent,
    /// since a delivery without the signature the receiver expects must not go out.
    pub secret_unreadable: bool,
    /// The secret `secret` replaced, while it may still sign.
    pub previous_secret: Option<PreviousSecret>,
    pub enabled: bool,
    /// When the tenant last erased a submission's personal data: only deliveries of events older
    /// than that are looked up in the erased events (`fp_domain::erasure::may_have_been_erased`),
    /// so the hot path costs no query. An erasure is notified like a saved config.
    pub latest_erasure_at: Option<DateTime<Utc>>,
}

/// A replaced secret and the end of its grace period.
#[derive(Debug)]
pub struct PreviousSecret {
    pub secret: WebhookSecret,
    pub expires_at: DateTime<Utc>,
}

impl Endpoint {
    pub fn wants(&self, event: EventType) -> bool {
        // `webhook.test` goes out when the tenant asks for it, whatever the endpoint subscribes to.
        self.enabled && (event == EventType::WebhookTest || self.events.contains(&event))
    }

    /// Whether a request once sent to `sent_to` may be sent again, to this endpoint's current URL:
    /// only while the endpoint is enabled and takes the format the stored body was made for
    /// (`fp_domain::format::takes_body_made_for`, the rule the api checked when it queued it).
    pub fn takes_redelivery_of(&self, sent_to: &str) -> bool {
        self.enabled && fp_domain::format::takes_body_made_for(&self.url, sent_to)
    }

    /// The secrets a delivery signed at `now` carries; `None` when it goes unsigned. Judged per
    /// delivery, not per cache load, so the grace period ends on time whatever the cache holds.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Option<SigningSecrets<'_>> {
        Some(SigningSecrets {
            current: self.secret.as_ref()?,
            previous: self
                .previous_secret
                .as_ref()
                .filter(|previous| now < previous.expires_at)
                .map(|previous| &previous.secret),
        })
    }
}

/// What a tenant id leads to. Every answer is cached, so unconfigured and unknown tenants cost no
/// query while their entry is fresh.
#[derive(Debug, Clone)]
pub enum Lookup {
    Endpoint(Arc<Endpoint>),
    /// The tenant exists and has no webhook config.
    NoConfig,
    /// No tenant has this id (never had, or deleted).
    UnknownTenant,
}

struct CachedLookup {
    /// When the ticket of its load was taken: the load read the database no earlier.
    read_after: Instant,
    /// Listening began again since its load: changes may have been missed, so it is loaded again
    /// before use, and kept only to serve while the database is unreachable.
    expired: bool,
    lookup: Lookup,
}

/// How long entries live (see the module's rules).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// While changes are not heard.
    pub ttl: Duration,
    /// While they are.
    pub max_age: Duration,
}

impl Lifetimes {
    /// Whether an entry may be used, `age` after its load. One kept while listening read the
    /// database after `LISTEN`, and one kept before was expired when listening began, so while
    /// listening every entry's changes are heard.
    fn fresh(self, listening: bool, age: Duration) -> bool {
        age < if listening { self.max_age } else { self.ttl }
    }
}

/// Leave to keep what one load read: taken before the cache is asked.
struct Ticket {
    epoch: u64,
    listening: bool,
    taken_at: Instant,
}

/// What the cache holds for a tenant.
enum Cached {
    Fresh(Lookup),
    /// To be loaded again; what it held serves only while the database is unreachable.
    Stale(Lookup),
    Missing,
}

/// The cached lookups and the rules of the module's doc; no I/O.
struct Entries {
    lifetimes: Lifetimes,
    map: RwLock<HashMap<Uuid, CachedLookup>>,
    /// Moves on every change heard and on listening again, before entries are dropped or
    /// expired: a load that started before it may not keep what it read.
    epoch: AtomicU64,
    /// Whether changes are heard right now.
    listening: AtomicBool,
}

impl Entries {
    fn new(lifetimes: Lifetimes) -> Self {
        Entries {
            lifetimes,
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    fn ticket(&self) -> Ticket {
        // The epoch first: a change heard after it is seen by `keep`.
        let taken_at = Instant::now();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let listening = self.listening.load(Ordering::SeqCst);
        Ticket {
            epoch,
            listening,
            taken_at,
        }
    }

    fn get(&self, tenant_id: Uuid, ticket: &Ticket) -> Cached {
        match self.read().get(&tenant_id) {
            Some(cached)
                if !cached.expired
                    && self
                        .lifetimes
                        .fresh(ticket.listening, cached.read_after.elapsed()) =>
            {
                Cached::Fresh(cached.lookup.clone())
            }
            Some(cached) => Cached::Stale(cached.lookup.clone()),
            None => Cached::Missing,
        }
    }

    /// Keeps what a load read, unless a change was heard (or listening began again) since
    /// `ticket` was taken: then it only replaces an expired entry read before it, to serve an
    /// outage (a change to this tenant heard since would have dropped that entry).
    fn keep(&self, tenant_id: Uuid, ticket: &Ticket, lookup: Lookup) {
        let mut map = self.write();
        // Checked under the lock a heard change takes: either the change came first and this
        // load is not kept, or the change drops what is kept here.
        if self.epoch.load(Ordering::SeqCst) == ticket.epoch {
            map.insert(
                tenant_id,
                CachedLookup {
                    read_after: ticket.taken_at,
                    expired: false,
                    lookup,
                },
            );
        } else if let Some(cached) = map.get_mut(&tenant_id)
            && cached.read_after < ticket.taken_at
        {
            *cached = CachedLookup {
                read_after: ticket.taken_at,
                expired: true,
                lookup,
            };
        }
    }

    /// A change to `tenant_id`'s entry, or to any (`None`): what was cached is known to be old,
    /// so it is dropped, not kept for an outage.
    fn changed(&self, tenant_id: Option<Uuid>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut map = self.write();
        match tenant_id {
            Some(tenant_id) => {
                map.remove(&tenant_id);
            }
            None => map.clear(),
        }
    }

    fn started_listening(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for cached in self.write().values_mut() {
            cached.expired = true;
        }
        self.listening.store(true, Ordering::SeqCst);
    }

    fn stopped_listening(&self) {
        self.listening.store(false, Ordering::SeqCst);
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Uuid, CachedLookup>> {
        // A panic while holding the lock leaves the map whole (inserts, updates and removes only).
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Uuid, CachedLookup>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct ConfigCache {
    pool: PgPool,
    master_key: MasterKey,
    entries: Entries,
}

impl ConfigCache {
    pub fn new(pool: PgPool, lifetimes: Lifetimes, master_key: MasterKey) -> Self {
        ConfigCache {
            pool,
            master_key,
            entries: Entries::new(lifetimes),
        }
    }

    /// The tenant's endpoint, or why there is none.
    pub async fn endpoint(&self, tenant_id: Uuid) -> Result<Lookup, StoreError> {
        let ticket = self.entries.ticket();
        if let Cached::Fresh(lookup) = self.entries.get(tenant_id, &ticket) {
            return Ok(lookup);
        }
        let lookup = match self.load(tenant_id).await {
            Ok(lookup) => lookup,
            // While the database is unreachable, the last config known goes on serving, so a
            // database outage does not stop deliveries to tenants already seen. Asked after the
            // load, so a change heard meanwhile (which drops the entry) is not overruled.
            Err(error) if error.is_unreachable() => match self.entries.get(tenant_id, &ticket) {
                Cached::Fresh(lookup) | Cached::Stale(lookup) => {
                    tracing::debug!(%tenant_id, %error, "database unreachable; using the cached config");
                    return Ok(lookup);
                }
                Cached::Missing => return Err(error),
            },
            Err(error) => return Err(error),
        };
        metrics::counter!("fp_dispatcher_config_loads_total").increment(1);
        self.entries.keep(tenant_id, &ticket, lookup.clone());
        Ok(lookup)
    }

    async fn load(&self, tenant_id: Uuid) -> Result<Lookup, StoreError> {
        let mut conn = self.pool.get().await?;
        let Some(row) = fp_store::webhook_config::find(&mut conn, tenant_id).await? else {
            // Only asked when there is no config, so a configured tenant costs no extra query.
            return Ok(
                if fp_store::identity::tenant_exists(&mut conn, tenant_id).await? {
                    Lookup::NoConfig
                } else {
                    Lookup::UnknownTenant
                },
            );
        };
        let events = row
            .events
            .iter()
            .filter_map(|name| match name.parse::<EventType>() {
                Ok(event) => Some(event),
                Err(error) => {
                    // The api validates on save; an unknown name here means a newer api wrote it.
                    tracing::warn!(%tenant_id, %error, "ignoring unknown event type in config");
                    None
                }
            })
            .collect();
        let (secret, secret_unreadable) = match row.secret_sealed {
            None => (None, false),
            Some(sealed) => match secret_box::open(&self.master_key, tenant_id, &sealed) {
                Ok(secret) => (Some(WebhookSecret::new(secret)), false),
                Err(error) => {
                    tracing::error!(
                        %tenant_id,
                        %error,
                        "the webhook secret of this tenant cannot be opened with this dispatcher's \
                         master key (FP__SECRETS__MASTER_KEY differs from the api's, or the row was \
                         altered): nothing is delivered to its endpoint until the key is fixed or \
                         the tenant saves the secret again"
                    );
                    (None, true)
                }
            },
        };
        let previous_secret = match (row.previous_secret_sealed, row.previous_secret_expires_at) {
            // Expired ones are not even opened: they sign nothing.
            (Some(sealed), Some(expires_at)) if Utc::now() < expires_at => {
                match secret_box::open(&self.master_key, tenant_id, &sealed) {
                    Ok(secret) => Some(PreviousSecret {
                        secret: WebhookSecret::new(secret),
                        expires_at,
                    }),
                    Err(error) => {
                        tracing::warn!(
                            %tenant_id,
                            %error,
                            "the previous webhook secret of this tenant (replaced, still in its \
                             grace period) cannot be opened with this dispatcher's master key: \
                             deliveries are signed with the current secret only"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let latest_erasure_at = fp_store::erasure::latest_erasure_at(&mut conn, tenant_id).await?;
        Ok(Lookup::Endpoint(Arc::new(Endpoint {
            url: row.url,
            events,
            secret,
            secret_unreadable,
            previous_secret,
            enabled: row.enabled,
            latest_erasure_at,
        })))
    }
}

/// Changes, as [`fp_store::notifications::follow`] hears them on [`config_changes::CHANNEL`].
impl Subscriber for ConfigCache {
    fn started_listening(&self) {
        self.entries.started_listening();
    }

    fn notified(&self, payload: &str) {
        match config_changes::parse_payload(payload) {
            Changed::Tenant(tenant_id) => self.entries.changed(Some(tenant_id)),
            Changed::Unknown => self.entries.changed(None),
        }
    }

    fn stopped_listening(&self) {
        self.entries.stopped_listening();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    fn endpoint(secret: Option<&str>, previous: Option<(&str, i64)>) -> Endpoint {
        Endpoint {
            url: "https://hooks.example/".into(),
            events: vec![EventType::SubmissionCreated],
            secret: secret.map(WebhookSecret::new),
            secret_unreadable: false,
            previous_secret: previous.map(|(secret, until)| PreviousSecret {
                secret: WebhookSecret::new(secret),
                expires_at: at(until),
            }),
            enabled: true,
            latest_erasure_at: None,
        }
    }

    fn exposed(secrets: Option<SigningSecrets<'_>>) -> Option<(&str, Option<&str>)> {
        secrets.map(|secrets| {
            (
                secrets.current.expose(),
                secrets.previous.map(WebhookSecret::expose),
            )
        })
    }

    #[test]
    fn an_entry_lives_the_max_age_while_listening_and_the_ttl_while_not() {
        let lifetimes = Lifetimes {
            ttl: Duration::from_secs(5),
            max_age: Duration::from_secs(600),
        };
        let minute = Duration::from_secs(60);
        assert!(lifetimes.fresh(true, minute));
        assert!(!lifetimes.fresh(true, Duration::from_secs(600)));
        assert!(!lifetimes.fresh(false, minute));
        assert!(lifetimes.fresh(false, Duration::from_secs(4)));
    }

    /// Entries that, while changes are not heard, are never fresh (a TTL of zero), so no test
    /// waits for them to expire.
    fn entries() -> Entries {
        Entries::new(Lifetimes {
            ttl: Duration::ZERO,
            max_age: Duration::from_secs(3600),
        })
    }

    const TENANT: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn state(entries: &Entries, tenant_id: Uuid) -> &'static str {
        match entries.get(tenant_id, &entries.ticket()) {
            Cached::Fresh(_) => "fresh",
            Cached::Stale(_) => "stale",
            Cached::Missing => "missing",
        }
    }

    /// Which lookup is cached, fresh or not.
    fn cached_lookup(entries: &Entries, tenant_id: Uuid) -> Option<&'static str> {
        match entries.get(tenant_id, &entries.ticket()) {
            Cached::Fresh(lookup) | Cached::Stale(lookup) => Some(match lookup {
                Lookup::Endpoint(_) => "endpoint",
                Lookup::NoConfig => "no config",
                Lookup::UnknownTenant => "unknown tenant",
            }),
            Cached::Missing => None,
        }
    }

    fn load(entries: &Entries, tenant_id: Uuid) {
        let ticket = entries.ticket();
        entries.keep(tenant_id, &ticket, Lookup::NoConfig);
    }

    #[test]
    fn an_entry_loaded_while_listening_lives_until_its_change_is_heard() {
        let entries = entries();
        entries.started_listening();
        load(&entries, TENANT);
        load(&entries, OTHER);
        assert_eq!(state(&entries, TENANT), "fresh");
        entries.changed(Some(TENANT));
        // Known to be old: not even an outage may use it.
        assert_eq!(state(&entries, TENANT), "missing");
        assert_eq!(state(&entries, OTHER), "fresh");
        entries.changed(None);
        assert_eq!(state(&entries, OTHER), "missing");
    }

    #[test]
    fn a_load_during_which_a_change_was_heard_is_not_kept() {
        let entries = entries();
        entries.started_listening();
        let ticket = entries.ticket();
        entries.changed(Some(OTHER));
        entries.keep(TENANT, &ticket, Lookup::NoConfig);
        assert_eq!(state(&entries, TENANT), "missing");
        // Nor one during which listening began again.
        let ticket = entries.ticket();
        entries.stopped_listening();
        entries.started_listening();
        entries.keep(TENANT, &ticket, Lookup::NoConfig);
        assert_eq!(state(&entries, TENANT), "missing");
    }

    #[test]
    fn unheard_entries_live_the_ttl_and_listening_again_loads_each_anew() {
        let entries = entries();
        // Loaded before listening: the TTL, and loaded anew once listening.
        load(&entries, TENANT);
        assert_eq!(state(&entries, TENANT), "stale");
        entries.started_listening();
        assert_eq!(state(&entries, TENANT), "stale");
        load(&entries, TENANT);
        assert_eq!(state(&entries, TENANT), "fresh");
        // The listener lost: the TTL again, for what was heard too.
        entries.stopped_listening();
        assert_eq!(state(&entries, TENANT), "stale");
        // Listening again: loaded anew before use, kept for an outage meanwhile.
        let fresh_while_deaf = Entries::new(Lifetimes {
            ttl: Duration::from_secs(3600),
            max_age: Duration::from_secs(3600),
        });
        fresh_while_deaf.started_listening();
        load(&fresh_while_deaf, TENANT);
        fresh_while_deaf.stopped_listening();
        assert_eq!(state(&fresh_while_deaf, TENANT), "fresh");
        fresh_while_deaf.started_listening();
        assert_eq!(state(&fresh_while_deaf, TENANT), "stale");
    }

    #[test]
    fn a_load_not_kept_still_replaces_an_older_copy_kept_for_an_outage() {
        let entries = entries();
        entries.started_listening();
        load(&entries, TENANT);
        entries.stopped_listening();
        entries.started_listening();
        // Tickets taken after the copy was read.
        std::thread::sleep(Duration::from_millis(1));
        let older = entries.ticket();
        entries.changed(Some(OTHER));
        std::thread::sleep(Duration::from_millis(1));
        let newer = entries.ticket();
        entries.changed(Some(OTHER));
        entries.keep(TENANT, &newer, Lookup::UnknownTenant);
        assert_eq!(state(&entries, TENANT), "stale");
        assert_eq!(cached_lookup(&entries, TENANT), Some("unknown tenant"));
        // A load whose ticket is older than the copy's does not replace it.
        entries.keep(TENANT, &older, Lookup::NoConfig);
        assert_eq!(cached_lookup(&entries, TENANT), Some("unknown tenant"));
        // Nor does one revive what a heard change dropped.
        entries.changed(Some(TENANT));
        entries.keep(TENANT, &newer, Lookup::NoConfig);
        assert_eq!(state(&entries, TENANT), "missing");
    }

    #[test]
    fn the_previous_secret_signs_only_until_its_grace_ends() {
        let rotating = endpoint(Some("new-secret"), Some(("old-secret", 100)));
        assert_eq!(
            exposed(rotating.signing_secrets(at(99))),
            Some(("new-secret", Some("old-secret")))
        );
        assert_eq!(
            exposed(rotating.signing_secrets(at(100))),
            Some(("new-secret", None))
        );
    }

    #[test]
    fn without_a_current_secret_nothing_is_signed() {
        assert_eq!(exposed(endpoint(None, None).signing_secrets(at(0))), None);
        assert_eq!(
            exposed(endpoint(None, Some(("old-secret", 100))).signing_secrets(at(0))),
            None
        );
    }

    #[test]
    fn test_events_and_redeliveries_ignore_the_subscription_but_not_the_switch() {
        let mut subscribed = endpoint(None, None);
        assert!(subscribed.wants(EventType::WebhookTest));
        assert!(!subscribed.wants(EventType::SubmissionStatusChanged));
        assert!(subscribed.takes_redelivery_of("https://hooks.example/"));
        // Another URL of the same format takes it; a body made for Slack does not suit it.
        assert!(subscribed.takes_redelivery_of("https://elsewhere.example/"));
        assert!(!subscribed.takes_redelivery_of("https://hooks.slack.com/services/T0/B0/x"));
        subscribed.enabled = false;
        assert!(!subscribed.wants(EventType::WebhookTest));
        assert!(!subscribed.takes_redelivery_of("https://hooks.example/"));
    }
}
