//! Configuration of every FeedbackPulse process.
//!
//! Layers, later ones winning: the built-in defaults (`defaults.toml` beside this file), then
//! `config/<profile>.toml` if present (profile from `FP_PROFILE`, default `local`; directory from
//! `FP_CONFIG_DIR`, default `config`), then environment variables `FP__<SECTION>__<KEY>`.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat};
use std::time::Duration;

use fp_domain::address_policy::Cidr;
use fp_domain::rate_limit::RateLimit;
use fp_domain::retry::{RetrySchedule, parse_duration};
use fp_domain::secret_box::MasterKey;
use serde::Deserialize;

/// Secrets are held as [`SecretString`] (its Debug prints `[REDACTED]`); services read them with
/// [`ExposeSecret::expose_secret`] where they connect or sign.
pub use secrecy::{ExposeSecret, SecretString};

const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("{MASTER_KEY_MISSING}")]
    MissingMasterKey,
}

/// Says what to set when a process that needs the master key has none.
pub const MASTER_KEY_MISSING: &str = "webhook secrets need a master key: set FP__SECRETS__MASTER_KEY to 64 hex characters (32 bytes), e.g. `openssl rand -hex 32`";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub api: ApiSettings,
    pub dashboard: DashboardSettings,
    pub dispatcher: DispatcherSettings,
    pub log_ingest: LogIngestSettings,
    pub retention: RetentionSettings,
    pub secrets: SecretsSettings,
    pub lifecycle: LifecycleSettings,
    pub notifications: NotificationsSettings,
}

/// Emails to a tenant's admins about its failing endpoint, sent by fp-api through SMTP.
#[derive(Debug, Clone, Deserialize)]
pub struct NotificationsSettings {
    pub enabled: bool,
    /// The SMTP server in lettre's URL form (`smtp://host:25`, `smtps://user:password@host`);
    /// it may hold the password.
    pub smtp_url: SecretString,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    #[serde(rename = "failing_after")]
    failing_after_raw: String,
    /// An endpoint that has failed every delivery this long gets its one "failing" email.
    #[serde(skip)]
    pub failing_after: Duration,
}

impl NotificationsSettings {
    /// Parses `failing_after`; when notifications are on, an SMTP server must be named.
    fn resolve(&mut self) -> Result<(), SettingsError> {
        let raw = &self.failing_after_raw;
        self.failing_after = parse_duration(raw).ok_or_else(|| SettingsError::Invalid {
            key: "notifications.failing_after",
            reason: format!("`{raw}` is not a duration such as 1h or 30m"),
        })?;
        if self.enabled && self.smtp_url.expose_secret().trim().is_empty() {
            return Err(SettingsError::Invalid {
                key: "notifications.smtp_url",
                reason: "notifications are enabled but no SMTP server is set \
                         (FP__NOTIFICATIONS__SMTP_URL, e.g. smtp://127.0.0.1:25)"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// How every service starts and stops.
#[derive(Debug, Clone, Deserialize)]
pub struct LifecycleSettings {
    /// After SIGTERM: how long in-flight work may take to finish before the rest is handed back.
    pub drain_timeout_ms: u64,
    /// How often readiness probes the database.
    pub readiness_probe_interval_ms: u64,
}

impl LifecycleSettings {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn readiness_probe_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_probe_interval_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// The application role's connection, password included.
    pub url: SecretString,
    /// The dashboard's read-only connection, password included.
    pub readonly_url: SecretString,
    pub readonly_role: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSettings {
    /// One AMQP URL per node, comma-separated; they carry the password.
    pub url: SecretString,
    pub namespace: String,
    /// `x-quorum-initial-group-size` of every quorum queue; `None`: the broker's default (every
    /// node of the cluster). Changing it needs new queues.
    #[serde(default)]
    pub quorum_initial_group_size: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`, apart from the public `listen`.
    pub health_listen: SocketAddr,
    /// How often the relay polls the outbox for rows the in-memory hand-off left.
    pub outbox_poll_interval_ms: u64,
    /// How long the poll leaves a committed row to the hand-off.
    pub outbox_handoff_grace_ms: u64,
    /// Outbox relay loops side by side, so one batch is claimed and published while another's
    /// confirms and commit are still pending.
    pub outbox_relay_pipelines: NonZeroUsize,
    /// Most new submissions committed in one statement (group commit).
    pub submission_batch_max: NonZeroUsize,
    /// Tasks committing those batches, each one batch at a time.
    pub submission_writers: NonZeroUsize,
    #[serde(rename = "disable_failing_endpoints_after")]
    disable_failing_endpoints_after_raw: String,
    #[serde(skip)]
    pub disable_failing_endpoints_after: Duration,
    #[serde(rename = "secret_rotation_grace")]
    secret_rotation_grace_raw: String,
    /// How long a replaced webhook secret still signs deliveries.
    #[serde(skip)]
    pub secret_rotation_grace: Duration,
    #[serde(rename = "session_idle_timeout")]
    session_idle_timeout_raw: String,
    #[serde(rename = "session_absolute_timeout")]
    session_absolute_timeout_raw: String,
    /// A dashboard session ends this long after its last use...
    #[serde(skip)]
    pub session_idle_timeout: Duration,
    /// ...and this long after its log-in, however busy.
    #[serde(skip)]
    pub session_absolute_timeout: Duration,
    #[serde(rename = "trusted_proxies")]
    trusted_proxies_raw: String,
    /// Peers whose `X-Forwarded-For` names the client (the dashboard, a load balancer); anyone
    /// else's is ignored, so a caller cannot pose as a fresh address per guess.
    #[serde(skip)]
    pub trusted_proxies: Vec<Cidr>,
    pub rate_limits: TenantRateLimits,
    /// Live API keys each api process keeps in memory; 0: none, every request asks the database.
    pub key_cache_capacity: u64,
    #[serde(rename = "key_cache_ttl")]
    key_cache_ttl_raw: String,
    /// How long a cached key is trusted at most. Revocations evict as their notification arrives
    /// (PostgreSQL notifies every api at commit); this only bounds a notification that got lost.
    #[serde(skip)]
    pub key_cache_ttl: Duration,
    #[serde(rename = "keep_alive")]
    keep_alive_raw: String,
    /// How long an idle client connection stays open.
    #[serde(skip)]
    pub keep_alive: Duration,
}

/// Per-tenant limits of the actions that make the platform send requests on a tenant's word,
/// held in the database so they bind every api replica together.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TenantRateLimits {
    /// Single redeliveries (`POST /api/v2/webhooks/logs/{id}/redeliver`).
    #[serde(deserialize_with = "rate_limit")]
    pub redelivery: RateLimit,
    /// Deliveries queued by bulk redeliveries (a call that queues none counts as one).
    #[serde(deserialize_with = "rate_limit")]
    pub bulk_redelivery: RateLimit,
    /// Test events (`POST /api/v2/webhooks/test`).
    #[serde(deserialize_with = "rate_limit")]
    pub test_event: RateLimit,
}

fn rate_limit<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<RateLimit, D::Error> {
    let text = String::deserialize(deserializer)?;
    RateLimit::parse(&text).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize)]
pub struct DashboardSettings {
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`, apart from the public `listen`.
    pub health_listen: SocketAddr,
    pub api_url: String,
    pub session_key: SecretString,
    /// The address browsers use. When it is https, every cookie is `Secure` and every answer
    /// carries `Strict-Transport-Security`.
    pub public_url: String,
    #[serde(rename = "trusted_proxies")]
    trusted_proxies_raw: String,
    /// Proxies in front of the dashboard whose `X-Forwarded-For` names the browser; without them
    /// every browser behind one proxy would share one log-in throttle.
    #[serde(skip)]
    pub trusted_proxies: Vec<Cidr>,
    #[serde(rename = "keep_alive")]
    keep_alive_raw: String,
    /// How long an idle client connection stays open.
    #[serde(skip)]
    pub keep_alive: Duration,
}

impl DashboardSettings {
    /// Whether the dashboard is served over https (to browsers, whatever terminates TLS).
    pub fn served_over_https(&self) -> bool {
        self.public_url
            .trim()
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DispatcherSettings {
    #[serde(rename = "allow_private_cidrs")]
    allow_private_cidrs_raw: String,
    #[serde(rename = "extra_root_certs")]
    extra_root_certs_raw: String,
    #[serde(rename = "hosts_file")]
    hosts_file_raw: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub prefetch: u16,
    /// How long a cached config is used while its changes cannot be heard (no listener).
    pub config_cache_ttl_ms: u64,
    /// How long at most while they are heard: only a bound for a notification that got lost.
    pub config_cache_max_age_ms: u64,
    pub health_listen: SocketAddr,
    #[serde(rename = "retry_schedule")]
    retry_schedule_raw: String,
    pub max_in_flight_per_endpoint: usize,
    pub endpoint_busy_delay_ms: u64,
    pub health_report_interval_ms: u64,
    /// Requests this dispatcher sends to one destination host per second, at most, on average...
    pub host_requests_per_second: NonZeroU32,
    /// ...and at once after a quiet spell.
    pub host_request_burst: NonZeroU32,
    /// Attempt records published in one message at most (records wait only for a free slot).
    pub record_batch_max: NonZeroUsize,
    /// Record batches awaiting their confirm at once.
    pub record_batches_in_flight: NonZeroUsize,
    /// How long the outcome writer gathers first attempts' outcomes into one statement.
    pub outcome_linger_ms: u64,
    /// Threads of the dispatcher's async runtime.
    pub worker_threads: NonZeroUsize,
    #[serde(skip)]
    pub retry_schedule: RetrySchedule,
    #[serde(skip)]
    pub allow_private_cidrs: Vec<Cidr>,
    #[serde(skip)]
    pub extra_root_certs: Option<PathBuf>,
    #[serde(skip)]
    pub hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogIngestSettings {
    pub batch_size: usize,
    pub batch_linger_ms: u64,
    pub prefetch: u16,
    pub health_listen: SocketAddr,
}

/// How long delivery records and published outbox rows are kept, and how the records' table is
/// partitioned (the services' maintenance loops and `fpctl maintenance run`).
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    /// Delivery records older than this many days are removed, a whole partition at a time.
    pub max_days: NonZeroU32,
    /// Days of `delivery_attempts` per partition.
    pub partition_days: NonZeroU32,
    /// How many days past today have their partition made in advance.
    pub days_ahead: u32,
    /// How often each service's maintenance loop (log-ingest's, the api's) runs (units: ms, s, m,
    /// h, d).
    #[serde(deserialize_with = "deserialize_duration")]
    pub maintenance_interval: Duration,
    /// Published outbox rows are removed this many hours after their publication (fp-api's loop).
    pub outbox_grace_hours: u32,
}

impl RetentionSettings {
    /// How long a published outbox row is kept.
    pub fn outbox_grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.outbox_grace_hours) * 3600)
    }
}

/// A duration written like `10m` or `1h`.
fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse_duration(&raw).ok_or_else(|| {
        serde::de::Error::custom(format!("`{raw}` is not a duration such as 10m or 1h"))
    })
}

/// The key that seals webhook secrets at rest. The api and the dispatcher need it; the other
/// processes never read a secret.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretsSettings {
    #[serde(rename = "master_key")]
    master_key_raw: SecretString,
    #[serde(skip)]
    master_key: Option<MasterKey>,
}

impl SecretsSettings {
    /// Parses the key; a key that is set must be valid, and the `production` profile must set one.
    fn resolve(&mut self, profile: &str) -> Result<(), SettingsError> {
        let raw = self.master_key_raw.expose_secret().trim();
        self.master_key = if raw.is_empty() {
            if profile == "production" {
                return Err(SettingsError::MissingMasterKey);
            }
            None
        } else {
            Some(
                MasterKey::from_hex(raw).map_err(|err| SettingsError::Invalid {
                    key: "secrets.master_key",
                    reason: format!(
                        "{err}; set FP__SECRETS__MASTER_KEY to 64 hex characters (32 bytes), e.g. `openssl rand -hex 32`"
                    ),
                })?,
            )
        };
        Ok(())
    }

    /// The master key, for the processes that seal or open webhook secrets.
    pub fn master_key(&self) -> Result<&MasterKey, SettingsError> {
        self.master_key
            .as_ref()
            .ok_or(SettingsError::MissingMasterKey)
    }
}

impl Settings {
    /// Reads the layered configuration of this process.
    pub fn load() -> Result<Self, SettingsError> {
        let profile = std::env::var("FP_PROFILE").unwrap_or_else(|_| "local".to_owned());
        let dir = std::env::var("FP_CONFIG_DIR").unwrap_or_else(|_| "config".to_owned());
        Self::load_layers(&profile, &dir, None)
    }

    /// How long `submission_events` keeps an event's row: as long as the event's delivery attempts
    /// may exist. Its last attempt is made at most [`DispatcherSettings::retry_horizon`] after it
    /// and lives `retention.max_days`; a day more covers a dispatcher's backlog or outage.
    pub fn submission_event_retention(&self) -> Duration {
        const DAY: Duration = Duration::from_secs(86_400);
        DAY.saturating_mul(self.retention.max_days.get())
            .saturating_add(self.dispatcher.retry_horizon())
            .saturating_add(DAY)
    }

    /// The layers of [`Settings::load`]; `environment` stands in for the process's variables when
    /// given (tests).
    fn load_layers(
        profile: &str,
        dir: &str,
        environment: Option<config::Map<String, String>>,
    ) -> Result<Self, SettingsError> {
        let raw = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::with_name(&format!("{dir}/{profile}")).required(false))
            .add_source(
                Environment::with_prefix("FP")
                    .prefix_separator("__")
                    .separator("__")
                    .source(environment),
            )
            .build()?;
        let mut settings: Settings = raw.try_deserialize()?;
        settings.dispatcher.resolve()?;
        settings.secrets.resolve(profile)?;
        settings.api.disable_failing_endpoints_after =
            parse_duration(&settings.api.disable_failing_endpoints_after_raw).ok_or_else(|| {
                SettingsError::Invalid {
                    key: "api.disable_failing_endpoints_after",
                    reason: format!(
                        "`{}` is not a duration such as 5d or 12h",
                        settings.api.disable_failing_endpoints_after_raw
                    ),
                }
            })?;
        settings.api.secret_rotation_grace = settings.api.rotation_grace()?;
        settings.api.resolve_sessions()?;
        settings.api.key_cache_ttl = settings.api.parse_key_cache_ttl()?;
        settings.api.check_outbox_handoff_grace()?;
        settings.notifications.resolve()?;
        settings.dashboard.trusted_proxies = parse_cidrs(
            "dashboard.trusted_proxies",
            &settings.dashboard.trusted_proxies_raw,
        )?;
        settings.api.keep_alive = keep_alive("api.keep_alive", &settings.api.keep_alive_raw)?;
        settings.dashboard.keep_alive =
            keep_alive("dashboard.keep_alive", &settings.dashboard.keep_alive_raw)?;
        Ok(settings)
    }
}

impl ApiSettings {
    fn rotation_grace(&self) -> Result<Duration, SettingsError> {
        // The api adds it to timestamps; so large a grace is a typo, not a wish.
        parse_duration_up_to(
            "api.secret_rotation_grace",
            &self.secret_rotation_grace_raw,
            MAX_ROTATION_GRACE,
            "365d, such as 24h",
        )
    }
}

impl ApiSettings {
    fn parse_key_cache_ttl(&self) -> Result<Duration, SettingsError> {
        parse_duration_up_to(
            "api.key_cache_ttl",
            &self.key_cache_ttl_raw,
            MAX_KEY_CACHE_TTL,
            "1d, such as 5m",
        )
    }
}

/// A cached key outliving a lost notification by more than a day is a typo, not a wish.
const MAX_KEY_CACHE_TTL: Duration = Duration::from_secs(86_400);

/// The outbox poll's grace: shorter than a second, the poll would take rows from hand-offs under
/// way (publishing their events twice); longer than an hour, what a stopped api left would wait
/// that long.
const OUTBOX_HANDOFF_GRACE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

impl ApiSettings {
    fn check_outbox_handoff_grace(&self) -> Result<(), SettingsError> {
        if OUTBOX_HANDOFF_GRACE_MS.contains(&self.outbox_handoff_grace_ms) {
            return Ok(());
        }
        Err(SettingsError::Invalid {
            key: "api.outbox_handoff_grace_ms",
            reason: format!(
                "{} is outside {}..={} (milliseconds)",
                self.outbox_handoff_grace_ms,
                OUTBOX_HANDOFF_GRACE_MS.start(),
                OUTBOX_HANDOFF_GRACE_MS.end()
            ),
        })
    }
}

impl ApiSettings {
    /// Parses the session timeouts and the trusted proxies, naming the key in any error.
    fn resolve_sessions(&mut self) -> Result<(), SettingsError> {
        let timeout = |key: &'static str, raw: &str| {
            parse_duration_up_to(key, raw, MAX_SESSION_TIMEOUT, "30d, such as 30m")
        };
        self.session_idle_timeout =
            timeout("api.session_idle_timeout", &self.session_idle_timeout_raw)?;
        self.session_absolute_timeout = timeout(
            "api.session_absolute_timeout",
            &self.session_absolute_timeout_raw,
        )?;
        self.trusted_proxies = parse_cidrs("api.trusted_proxies", &self.trusted_proxies_raw)?;
        Ok(())
    }
}

/// Longer sessions are a typo, not a wish.
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// An HTTP server's idle connection timeout. It must outlast the idle timeout of every proxy and
/// client pool in front: whichever end closes an idle connection first races the other's next
/// request on it, and only the client end can lose that race without losing a request.
fn keep_alive(key: &'static str, raw: &str) -> Result<Duration, SettingsError> {
    parse_duration_up_to(key, raw, MAX_KEEP_ALIVE, "1h, such as 75s")
}

/// Idle connections held longer than an hour are a typo, not a wish.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(3_600);

/// A duration of at most `max`; the error names `key` and says what it takes, from 1ms to
/// `max_and_example`.
fn parse_duration_up_to(
    key: &'static str,
    raw: &str,
    max: Duration,
    max_and_example: &str,
) -> Result<Duration, SettingsError> {
    parse_duration(raw)
        .filter(|duration| *duration <= max)
        .ok_or_else(|| SettingsError::Invalid {
            key,
            reason: format!("`{raw}` is not a duration from 1ms to {max_and_example}"),
        })
}

/// A comma-separated CIDR list; blanks are ignored.
fn parse_cidrs(key: &'static str, raw: &str) -> Result<Vec<Cidr>, SettingsError> {
    raw.split(',')
        .map(str::trim)
        .filter(|cidr| !cidr.is_empty())
        .map(|cidr| {
            cidr.parse::<Cidr>().map_err(|err| SettingsError::Invalid {
                key,
                reason: err.to_string(),
            })
        })
        .collect()
}

const MAX_ROTATION_GRACE: Duration = Duration::from_secs(365 * 86_400);

impl DispatcherSettings {
    /// Parses the string-typed keys, naming the key in any error.
    fn resolve(&mut self) -> Result<(), SettingsError> {
        self.allow_private_cidrs = parse_cidrs(
            "dispatcher.allow_private_cidrs",
            &self.allow_private_cidrs_raw,
        )?;
        self.extra_root_certs = optional_path(&self.extra_root_certs_raw);
        self.hosts_file = optional_path(&self.hosts_file_raw);
        self.retry_schedule = RetrySchedule::parse(&self.retry_schedule_raw).map_err(|err| {
            SettingsError::Invalid {
                key: "dispatcher.retry_schedule",
                reason: err.to_string(),
            }
        })?;
        if self.max_in_flight_per_endpoint == 0 {
            return Err(SettingsError::Invalid {
                key: "dispatcher.max_in_flight_per_endpoint",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }

    /// Every delay queue the dispatcher uses: the schedule's tiers and the busy-endpoint delay.
    pub fn delay_tiers(&self) -> Vec<Duration> {
        let mut tiers = self.retry_schedule.tiers();
        tiers.push(self.endpoint_busy_delay());
        tiers.sort_unstable();
        tiers.dedup();
        tiers
    }

    pub fn endpoint_busy_delay(&self) -> Duration {
        Duration::from_millis(self.endpoint_busy_delay_ms)
    }

    /// The latest an event's last attempt can come after its first: every retry waiting the
    /// schedule's longest step, since a receiver's `Retry-After` may stretch any wait that far
    /// (`RetrySchedule::next_retry`). 9 × 24 h with the default schedule, not its 3-day sum.
    pub fn retry_horizon(&self) -> Duration {
        let longest = self.retry_schedule.tiers().last().copied();
        longest
            .unwrap_or(Duration::ZERO)
            .saturating_mul(self.retry_schedule.max_attempts() - 1)
    }
}

fn optional_path(text: &str) -> Option<PathBuf> {
    let text = text.trim();
    (!text.is_empty()).then(|| PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher_with(cidrs: &str) -> DispatcherSettings {
        DispatcherSettings {
            allow_private_cidrs_raw: cidrs.into(),
            extra_root_certs_raw: " ".into(),
            hosts_file_raw: String::new(),
            connect_timeout_ms: 1,
            request_timeout_ms: 1,
            prefetch: 1,
            config_cache_ttl_ms: 1,
            config_cache_max_age_ms: 1,
            health_listen: "127.0.0.1:0".parse().expect("addr"),
            retry_schedule_raw: "1s,5s".into(),
            max_in_flight_per_endpoint: 4,
            endpoint_busy_delay_ms: 1000,
            health_report_interval_ms: 1000,
            host_requests_per_second: NonZeroU32::MIN,
            host_request_burst: NonZeroU32::MIN,
            record_batch_max: NonZeroUsize::MIN,
            record_batches_in_flight: NonZeroUsize::MIN,
            outcome_linger_ms: 0,
            worker_threads: NonZeroUsize::MIN,
            retry_schedule: RetrySchedule::standard(),
            allow_private_cidrs: Vec::new(),
            extra_root_certs: None,
            hosts_file: None,
        }
    }

    #[test]
    fn allow_list_is_a_comma_separated_cidr_list() {
        let mut dispatcher = dispatcher_with("127.0.0.0/8, ::1/128,");
        dispatcher.resolve().expect("valid list");
        assert_eq!(dispatcher.allow_private_cidrs.len(), 2);
        assert_eq!(dispatcher.extra_root_certs, None);
    }

    #[test]
    fn delay_tiers_cover_the_schedule_and_the_busy_delay_once() {
        let mut dispatcher = dispatcher_with("");
        dispatcher.resolve().expect("valid");
        assert_eq!(
            dispatcher.delay_tiers(),
            vec![Duration::from_secs(1), Duration::from_secs(5)]
        );
        dispatcher.retry_schedule_raw = "2x".into();
        let error = dispatcher.resolve().expect_err("invalid schedule");
        assert!(
            error.to_string().contains("dispatcher.retry_schedule"),
            "{error}"
        );
    }

    #[test]
    fn submission_events_outlive_the_attempts_of_a_retry_stretched_to_the_longest_step() {
        let raw = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse");
        let mut settings: Settings = raw.try_deserialize().expect("defaults fit the types");
        settings.dispatcher.resolve().expect("valid");
        let days = |days: u64| Duration::from_secs(days * 86_400);
        // Nine retries of up to 24 h each, then 30 days of attempts and a day of margin.
        assert_eq!(settings.dispatcher.retry_horizon(), days(9));
        assert_eq!(settings.submission_event_retention(), days(30 + 9 + 1));
    }

    #[test]
    fn a_bad_cidr_names_the_key() {
        let error = dispatcher_with("127.0.0.0/8,10.0.0.0/99")
            .resolve()
            .expect_err("invalid");
        assert!(
            error.to_string().contains("dispatcher.allow_private_cidrs"),
            "{error}"
        );
    }

    #[test]
    fn built_in_defaults_deserialise() {
        let raw = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse");
        let settings: Settings = raw.try_deserialize().expect("defaults fit the types");
        assert_eq!(settings.api.listen.port(), 8080);
        assert_eq!(settings.dashboard.listen.port(), 8081);
        assert_eq!(settings.api.health_listen.port(), 8084);
        assert_eq!(settings.dashboard.health_listen.port(), 8085);
        assert_eq!(settings.broker.namespace, "fp");
        assert!(settings.secrets.master_key_raw.expose_secret().is_empty());
        assert_eq!(
            settings.api.rotation_grace().expect("valid default"),
            Duration::from_secs(24 * 3600)
        );
    }

    /// The built-in defaults under `environment` (`FP__...` variables), as `Settings::load` reads
    /// them before resolving.
    fn with_environment(environment: &[(&str, &str)]) -> Result<Settings, config::ConfigError> {
        let environment = environment
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect::<std::collections::HashMap<_, _>>();
        Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(
                Environment::with_prefix("FP")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(environment)),
            )
            .build()
            .and_then(Config::try_deserialize::<Settings>)
    }

    #[test]
    fn tenant_rate_limits_have_defaults_and_are_read_from_the_environment() {
        let defaults = with_environment(&[])
            .expect("defaults fit the types")
            .api
            .rate_limits;
        assert_eq!(
            defaults.redelivery,
            RateLimit::parse("60/1m").expect("valid")
        );
        assert_eq!(
            defaults.bulk_redelivery,
            RateLimit::parse("10000/1h").expect("valid")
        );
        assert_eq!(
            defaults.test_event,
            RateLimit::parse("30/1m").expect("valid")
        );
        let short =
            with_environment(&[("FP__API__RATE_LIMITS__TEST_EVENT", "3/2s")]).expect("valid");
        assert_eq!(
            short.api.rate_limits.test_event,
            RateLimit::parse("3/2s").expect("valid")
        );
        let error = with_environment(&[("FP__API__RATE_LIMITS__REDELIVERY", "60 a minute")])
            .expect_err("invalid");
        assert!(error.to_string().contains("60/1m"), "{error}");
        let dispatcher = with_environment(&[]).expect("defaults").dispatcher;
        assert_eq!(dispatcher.host_requests_per_second.get(), 500);
        assert_eq!(dispatcher.host_request_burst.get(), 1000);
        let error = with_environment(&[("FP__DISPATCHER__HOST_REQUESTS_PER_SECOND", "0")])
            .expect_err("zero");
        assert!(
            error.to_string().contains("host_requests_per_second"),
            "{error}"
        );
    }

    #[test]
    fn the_outbox_handoff_grace_is_refused_outside_a_second_to_an_hour() {
        let grace = |value: &str| {
            with_environment(&[("FP__API__OUTBOX_HANDOFF_GRACE_MS", value)])
                .expect("a number")
                .api
                .check_outbox_handoff_grace()
        };
        let defaults = with_environment(&[]).expect("defaults");
        assert_eq!(defaults.api.outbox_handoff_grace_ms, 5_000);
        defaults
            .api
            .check_outbox_handoff_grace()
            .expect("the default");
        for refused in ["0", "999", "3600001"] {
            let error = grace(refused).expect_err(refused);
            assert!(
                error.to_string().contains("outbox_handoff_grace_ms"),
                "{error}"
            );
        }
        grace("1000").expect("a second");
    }

    #[test]
    fn batch_and_thread_settings_have_defaults_and_refuse_zero() {
        let settings = with_environment(&[]).expect("defaults fit the types");
        assert_eq!(settings.api.submission_batch_max.get(), 64);
        assert_eq!(settings.api.submission_writers.get(), 1);
        assert_eq!(settings.dispatcher.record_batch_max.get(), 256);
        assert_eq!(settings.dispatcher.record_batches_in_flight.get(), 2);
        assert_eq!(settings.dispatcher.outcome_linger_ms, 5);
        assert_eq!(settings.dispatcher.worker_threads.get(), 1);
        for (variable, key) in [
            ("FP__API__SUBMISSION_BATCH_MAX", "submission_batch_max"),
            ("FP__API__SUBMISSION_WRITERS", "submission_writers"),
            ("FP__DISPATCHER__RECORD_BATCH_MAX", "record_batch_max"),
            (
                "FP__DISPATCHER__RECORD_BATCHES_IN_FLIGHT",
                "record_batches_in_flight",
            ),
            ("FP__DISPATCHER__WORKER_THREADS", "worker_threads"),
        ] {
            let error = with_environment(&[(variable, "0")]).expect_err("zero");
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn quorum_group_size_is_unset_by_default_and_read_from_the_environment() {
        let defaults = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse")
            .try_deserialize::<Settings>()
            .expect("defaults fit the types");
        assert_eq!(defaults.broker.quorum_initial_group_size, None);
        let from_env =
            |value: &str| with_environment(&[("FP__BROKER__QUORUM_INITIAL_GROUP_SIZE", value)]);
        let settings = from_env("3").expect("an integer");
        assert_eq!(settings.broker.quorum_initial_group_size, Some(3));
        assert!(from_env("three").is_err());
        assert!(from_env("-1").is_err());
    }

    #[test]
    fn sessions_default_to_30_minutes_idle_12_hours_at_most_and_a_loopback_proxy() {
        let raw = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse");
        let settings = raw
            .try_deserialize::<Settings>()
            .expect("defaults fit the types");
        let mut api = settings.api;
        api.resolve_sessions().expect("valid defaults");
        assert_eq!(api.session_idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(api.session_absolute_timeout, Duration::from_secs(12 * 3600));
        let loopback = |ip: &str| {
            api.trusted_proxies
                .iter()
                .any(|cidr| cidr.contains(ip.parse().expect("ip")))
        };
        assert!(loopback("127.0.0.1") && loopback("::1"));
        assert!(!loopback("10.0.0.1"));
        assert!(!settings.dashboard.served_over_https());

        api.session_idle_timeout_raw = "31d".into();
        let error = api.resolve_sessions().expect_err("too long");
        assert!(
            error.to_string().contains("api.session_idle_timeout"),
            "{error}"
        );
        api.session_idle_timeout_raw = "2s".into();
        api.trusted_proxies_raw = "10.0.0.0/33".into();
        let error = api.resolve_sessions().expect_err("bad cidr");
        assert!(error.to_string().contains("api.trusted_proxies"), "{error}");
    }

    #[test]
    fn notifications_are_off_by_default_and_need_a_server_when_on() {
        let mut defaults = with_environment(&[]).expect("defaults").notifications;
        defaults.resolve().expect("valid defaults");
        assert!(!defaults.enabled);
        assert_eq!(defaults.failing_after, Duration::from_secs(3600));
        let mut on = with_environment(&[
            ("FP__NOTIFICATIONS__ENABLED", "true"),
            ("FP__NOTIFICATIONS__FAILING_AFTER", "2s"),
        ])
        .expect("valid types")
        .notifications;
        let error = on.resolve().expect_err("no server");
        assert!(
            error.to_string().contains("notifications.smtp_url"),
            "{error}"
        );
        on.smtp_url = SecretString::from("smtp://127.0.0.1:2525");
        on.resolve().expect("valid");
        assert_eq!(on.failing_after, Duration::from_secs(2));
        on.failing_after_raw = "an hour".into();
        let error = on.resolve().expect_err("bad duration");
        assert!(
            error.to_string().contains("notifications.failing_after"),
            "{error}"
        );
    }

    #[test]
    fn only_an_https_public_url_is_https() {
        let mut dashboard = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse")
            .try_deserialize::<Settings>()
            .expect("defaults fit the types")
            .dashboard;
        for (url, https) in [
            ("https://dashboard.example", true),
            (" HTTPS://dashboard.example/", true),
            ("http://dashboard.example", false),
            ("", false),
        ] {
            dashboard.public_url = url.into();
            assert_eq!(dashboard.served_over_https(), https, "{url:?}");
        }
    }

    #[test]
    fn a_bad_rotation_grace_names_the_key() {
        let raw = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults parse");
        let mut api = raw
            .try_deserialize::<Settings>()
            .expect("defaults fit the types")
            .api;
        for bad in ["0s", "24", "1y", "366d"] {
            api.secret_rotation_grace_raw = bad.into();
            let error = api.rotation_grace().expect_err(bad);
            assert!(
                error.to_string().contains("api.secret_rotation_grace"),
                "{error}"
            );
        }
        api.secret_rotation_grace_raw = "3s".into();
        assert_eq!(api.rotation_grace().expect("valid"), Duration::from_secs(3));
    }

    #[test]
    fn the_key_cache_holds_10000_keys_for_5_minutes_by_default() {
        let mut api = with_environment(&[]).expect("defaults").api;
        assert_eq!(api.key_cache_capacity, 10_000);
        assert_eq!(
            api.parse_key_cache_ttl().expect("valid default"),
            Duration::from_secs(5 * 60)
        );
        for bad in ["0s", "5", "2d", "soon"] {
            api.key_cache_ttl_raw = bad.into();
            let error = api.parse_key_cache_ttl().expect_err(bad);
            assert!(error.to_string().contains("api.key_cache_ttl"), "{error}");
        }
        let off = with_environment(&[
            ("FP__API__KEY_CACHE_CAPACITY", "0"),
            ("FP__API__KEY_CACHE_TTL", "1h"),
        ])
        .expect("valid")
        .api;
        assert_eq!(off.key_cache_capacity, 0);
        assert_eq!(
            off.parse_key_cache_ttl().expect("valid"),
            Duration::from_secs(3600)
        );
        assert!(with_environment(&[("FP__API__KEY_CACHE_CAPACITY", "-1")]).is_err());
    }

    #[test]
    fn idle_connections_stay_75_seconds_by_default_and_at_most_an_hour() {
        let defaults = with_environment(&[]).expect("defaults");
        for (key, raw) in [
            ("api.keep_alive", &defaults.api.keep_alive_raw),
            ("dashboard.keep_alive", &defaults.dashboard.keep_alive_raw),
        ] {
            assert_eq!(keep_alive(key, raw).expect(key), Duration::from_secs(75));
        }
        let behind_google = with_environment(&[("FP__API__KEEP_ALIVE", "620s")]).expect("valid");
        assert_eq!(
            keep_alive("api.keep_alive", &behind_google.api.keep_alive_raw).expect("valid"),
            Duration::from_secs(620)
        );
        for bad in ["0s", "75", "2h", "long"] {
            let error = keep_alive("dashboard.keep_alive", bad).expect_err(bad);
            assert!(
                error.to_string().contains("dashboard.keep_alive"),
                "{error}"
            );
        }
    }

    fn secrets_with(raw: &str) -> SecretsSettings {
        SecretsSettings {
            master_key_raw: SecretString::from(raw),
            master_key: None,
        }
    }

    #[test]
    fn master_key_is_parsed_when_set() {
        let mut secrets = secrets_with(&"ab".repeat(32));
        secrets.resolve("production").expect("valid key");
        assert!(secrets.master_key().is_ok());
    }

    #[test]
    fn a_missing_master_key_stops_production_and_says_what_to_set() {
        let error = secrets_with("").resolve("production").expect_err("missing");
        assert!(
            error.to_string().contains("FP__SECRETS__MASTER_KEY"),
            "{error}"
        );
        let mut local = secrets_with(" ");
        local.resolve("local").expect("allowed outside production");
        let error = local.master_key().expect_err("no key");
        assert!(
            error.to_string().contains("FP__SECRETS__MASTER_KEY"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        const MASTER_KEY: &str = "5e0c1d2b3a49f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060";
        const SESSION_KEY: &str =
            "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f91";
        const DATABASE_PASSWORD: &str = "app-db-pass-7Qx";
        const READONLY_PASSWORD: &str = "dashboard-db-pass-3Zk";
        const BROKER_PASSWORD: &str = "broker-pass-9Km";
        const SMTP_PASSWORD: &str = "smtp-pass-4Tr";
        let smtp_url = format!("smtps://fp:{SMTP_PASSWORD}@smtp.internal:465");
        let database_url = format!("postgres://fp_app:{DATABASE_PASSWORD}@db.internal:5432/fp");
        let readonly_url =
            format!("postgres://fp_dashboard:{READONLY_PASSWORD}@db-ro.internal:5432/fp");
        let broker_url = format!(
            "amqps://fp:{BROKER_PASSWORD}@mq-1.internal:5671/%2f,amqps://fp:{BROKER_PASSWORD}@mq-2.internal:5671/%2f"
        );
        let environment = config::Map::from_iter(
            [
                ("FP__SECRETS__MASTER_KEY", MASTER_KEY),
                ("FP__DASHBOARD__SESSION_KEY", SESSION_KEY),
                ("FP__DATABASE__URL", &database_url),
                ("FP__DATABASE__READONLY_URL", &readonly_url),
                ("FP__BROKER__URL", &broker_url),
                ("FP__BROKER__NAMESPACE", "fp-secrets-test"),
                ("FP__NOTIFICATIONS__SMTP_URL", &smtp_url),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
        );
        let settings = Settings::load_layers("production", "no-such-config-dir", Some(environment))
            .expect("valid settings");

        // Loaded, so a clean Debug output means they are hidden, not missing.
        assert_eq!(settings.database.url.expose_secret(), database_url);
        assert_eq!(settings.database.readonly_url.expose_secret(), readonly_url);
        assert_eq!(settings.broker.url.expose_secret(), broker_url);
        assert_eq!(settings.dashboard.session_key.expose_secret(), SESSION_KEY);
        assert!(settings.secrets.master_key().is_ok());
        assert_eq!(settings.notifications.smtp_url.expose_secret(), smtp_url);

        let printed = format!("{settings:?}");
        for secret in [
            MASTER_KEY,
            SESSION_KEY,
            DATABASE_PASSWORD,
            READONLY_PASSWORD,
            BROKER_PASSWORD,
            SMTP_PASSWORD,
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("fp-secrets-test"), "{printed}");
    }

    #[test]
    fn a_bad_master_key_is_refused_in_every_profile() {
        for raw in ["not hex", &"ab".repeat(16)] {
            let error = secrets_with(raw).resolve("local").expect_err("invalid");
            let text = error.to_string();
            assert!(text.contains("secrets.master_key"), "{text}");
            assert!(text.contains("FP__SECRETS__MASTER_KEY"), "{text}");
        }
    }
}
