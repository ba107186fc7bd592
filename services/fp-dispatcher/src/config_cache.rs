//! Tenants' webhook configs, cached so that a delivery costs no database round trip while the
//! entry is fresh. A change to what an entry holds (the config, the tenant, an erasure) is
//! notified at commit on [`fp_store::config_changes::CHANNEL`]; every dispatcher drops that
//! tenant's entry when it hears it, so a saved config is used from the next delivery on. Rules:
//! - while changes are heard, an entry loaded while listening lives until its tenant's change is
//!   heard, or `max_age` at most (a bound for a notification that got lost);
//! - while they are not (the listener is lost, or not yet up), every entry lives `ttl` only;
//! - listening again, the cache starts empty: changes made while not listening were missed;
//! - a load that a change was heard during is not kept: what it read may be the old config.
//!
//! Secrets are stored sealed (`fp_domain::secret_box`) and opened here with the master key. A secret
//! that does not open (another master key, a tampered row) never means "deliver unsigned": the
//! endpoint is marked unreadable and the dispatcher delivers nothing to it. A previous secret (one
//! replaced, still in its grace period) that does not open is only left out: the current secret
//! alone decides whether a delivery may go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
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
    loaded_at: Instant,
    /// Whether changes were heard from before its load began.
    heard: bool,
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
    /// Whether an entry may be used, `age` after its load.
    fn fresh(self, heard: bool, listening: bool, age: Duration) -> bool {
        age < if heard && listening {
            self.max_age
        } else {
            self.ttl
        }
    }
}

/// Leave to keep what one load read: taken before the load.
struct Ticket {
    epoch: u64,
    listening: bool,
}

pub struct ConfigCache {
    pool: PgPool,
    lifetimes: Lifetimes,
    master_key: MasterKey,
    entries: RwLock<HashMap<Uuid, CachedLookup>>,
    /// Moves on every change heard and on listening again, before entries are dropped: a load
    /// that started before it may not keep what it read.
    epoch: AtomicU64,
    /// Whether changes are heard right now.
    listening: AtomicBool,
}

impl ConfigCache {
    pub fn new(pool: PgPool, lifetimes: Lifetimes, master_key: MasterKey) -> Self {
        ConfigCache {
            pool,
            lifetimes,
            master_key,
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    /// The tenant's endpoint, or why there is none.
    pub async fn endpoint(&self, tenant_id: Uuid) -> Result<Lookup, StoreError> {
        let ticket = self.ticket();
        let stale = match self.read_entries().get(&tenant_id) {
            Some(cached)
                if self.lifetimes.fresh(
                    cached.heard,
                    ticket.listening,
                    cached.loaded_at.elapsed(),
                ) =>
            {
                return Ok(cached.lookup.clone());
            }
            Some(cached) => Some(cached.lookup.clone()),
            None => None,
        };
        let lookup = match (self.load(tenant_id).await, stale) {
            (Ok(lookup), _) => lookup,
            // While the database is unreachable, the last config known goes on serving, so a
            // database outage does not stop deliveries to tenants already seen.
            (Err(error), Some(stale)) if error.is_unreachable() => {
                tracing::debug!(%tenant_id, %error, "database unreachable; using the cached config");
                return Ok(stale);
            }
            (Err(error), _) => return Err(error),
        };
        metrics::counter!("fp_dispatcher_config_loads_total").increment(1);
        let mut entries = self.write_entries();
        // Checked under the lock a heard change takes to drop its entry: either the change came
        // first and this load is not kept, or the change drops what is kept here.
        if self.epoch.load(Ordering::SeqCst) == ticket.epoch {
            entries.insert(
                tenant_id,
                CachedLookup {
                    loaded_at: Instant::now(),
                    heard: ticket.listening,
                    lookup: lookup.clone(),
                },
            );
        }
        Ok(lookup)
    }

    fn ticket(&self) -> Ticket {
        // The epoch first: a change heard after it is seen by the insert.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let listening = self.listening.load(Ordering::SeqCst);
        Ticket { epoch, listening }
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, CachedLookup>> {
        // A panic while holding the lock leaves the map whole (inserts and removes only).
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, CachedLookup>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self, tenant_id: Option<Uuid>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut entries = self.write_entries();
        match tenant_id {
            Some(tenant_id) => {
                entries.remove(&tenant_id);
            }
            None => entries.clear(),
        }
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
    /// Changes made while not listening were missed, so whatever was cached before goes first.
    fn listening(&self) {
        self.changed(None);
        self.listening.store(true, Ordering::SeqCst);
    }

    fn notified(&self, payload: &str) {
        match config_changes::parse_payload(payload) {
            Changed::Tenant(tenant_id) => self.changed(Some(tenant_id)),
            Changed::Unknown => self.changed(None),
        }
    }

    fn stopped_listening(&self) {
        self.listening.store(false, Ordering::SeqCst);
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
    fn an_entry_lives_until_its_change_is_heard_only_while_changes_are_heard() {
        let lifetimes = Lifetimes {
            ttl: Duration::from_secs(5),
            max_age: Duration::from_secs(600),
        };
        let minute = Duration::from_secs(60);
        assert!(lifetimes.fresh(true, true, minute));
        assert!(!lifetimes.fresh(true, true, Duration::from_secs(600)));
        // Loaded before listening, or judged while the listener is lost: the short TTL.
        assert!(!lifetimes.fresh(false, true, minute));
        assert!(!lifetimes.fresh(true, false, minute));
        assert!(lifetimes.fresh(false, false, Duration::from_secs(4)));
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
