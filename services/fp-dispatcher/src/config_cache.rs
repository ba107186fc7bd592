//! Tenants' webhook configs, cached so that a delivery costs no database round trip while the
//! entry is fresh. An entry lives `ttl`; a config saved through the api reaches every dispatcher
//! within that time.
//!
//! Secrets are stored sealed (`fp_domain::secret_box`) and opened here with the master key. A secret
//! that does not open (another master key, a tampered row) never means "deliver unsigned": the
//! endpoint is marked unreadable and the dispatcher delivers nothing to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fp_domain::EventType;
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::signing::WebhookSecret;
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
    pub enabled: bool,
}

impl Endpoint {
    pub fn wants(&self, event: EventType) -> bool {
        self.enabled && self.events.contains(&event)
    }
}

/// A lookup result, including "no config", which is cached too so unconfigured tenants cost no query.
struct CachedLookup {
    loaded_at: Instant,
    endpoint: Option<Arc<Endpoint>>,
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

    /// The tenant's endpoint, or `None` when the tenant has not configured one.
    pub async fn endpoint(&self, tenant_id: Uuid) -> Result<Option<Arc<Endpoint>>, StoreError> {
        if let Some(cached) = self.entries.read().await.get(&tenant_id)
            && cached.loaded_at.elapsed() < self.ttl
        {
            return Ok(cached.endpoint.clone());
        }
        let endpoint = self.load(tenant_id).await?;
        let cached = CachedLookup {
            loaded_at: Instant::now(),
            endpoint: endpoint.clone(),
        };
        self.entries.write().await.insert(tenant_id, cached);
        Ok(endpoint)
    }

    async fn load(&self, tenant_id: Uuid) -> Result<Option<Arc<Endpoint>>, StoreError> {
        let mut conn = self.pool.get().await?;
        let Some(row) = fp_store::webhook_config::find(&mut conn, tenant_id).await? else {
            return Ok(None);
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
        Ok(Some(Arc::new(Endpoint {
            url: row.url,
            events,
            secret,
            secret_unreadable,
            enabled: row.enabled,
        })))
    }
}
