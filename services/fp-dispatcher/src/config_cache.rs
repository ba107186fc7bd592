//! Tenants' webhook configs, cached so that a delivery costs no database round trip while the
//! entry is fresh. An entry lives `ttl`; a config saved through the api reaches every dispatcher
//! within that time.
//!
//! Secrets are stored sealed (`fp_domain::secret_box`) and opened here with the master key. A secret
//! that does not open (another master key, a tampered row) never means "deliver unsigned": the
//! endpoint is marked unreadable and the dispatcher delivers nothing to it. A previous secret (one
//! replaced, still in its grace period) that does not open is only left out: the current secret
//! alone decides whether a delivery may go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::signing::{SigningSecrets, WebhookSecret};
use fp_store::{PgPool, StoreError};
use tokio::sync::RwLock;
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
    /// so the hot path costs no query. An erasure reaches a dispatcher within the cache's TTL.
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
    lookup: Lookup,
}

pub struct ConfigCache {
    pool: PgPool,
    ttl: Duration,
    master_key: MasterKey,
    entries: RwLock<HashMap<Uuid, CachedLookup>>,
}

impl ConfigCache {
    pub fn new(pool: PgPool, ttl: Duration, master_key: MasterKey) -> Self {
        ConfigCache {
            pool,
            ttl,
            master_key,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant's endpoint, or why there is none.
    pub async fn endpoint(&self, tenant_id: Uuid) -> Result<Lookup, StoreError> {
        let stale = match self.entries.read().await.get(&tenant_id) {
            Some(cached) if cached.loaded_at.elapsed() < self.ttl => {
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
        let cached = CachedLookup {
            loaded_at: Instant::now(),
            lookup: lookup.clone(),
        };
        self.entries.write().await.insert(tenant_id, cached);
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
