//! Emails a tenant's admins when its endpoint has failed every delivery for
//! `notifications.failing_after`, and when the api disabled it: `fp_domain::notification` writes
//! them, `fp_mail` sends them. Each is claimed in the database before it is sent
//! (`fp_store::endpoint_notifications`), so one api replica sends it, once per run of failures.
//!
//! The health recorder wakes the notifier after each failure it records; the notifier also looks
//! every [`SWEEP_INTERVAL`] by itself, so an email falls due without a report, and one whose send
//! failed (released again) is tried at the next look. It runs apart from the recorder: a slow or
//! absent SMTP server never holds up the health reports.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use fp_domain::notification::{self, FailedAttempt, FailingEndpoint};
use fp_domain::url_redaction::redact_url;
use fp_mail::Mailer;
use fp_settings::ExposeSecret;
use fp_store::endpoint_notifications::{self as notices, ClaimedNotice, Notice};
use fp_store::{PgPool, StoreError};
use tokio::sync::{Notify, watch};

/// The longest pause between two looks for emails that are due.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Emails claimed per statement; a full batch is followed by another at once.
const BATCH: i64 = 20;
/// How long one email may take to be taken by the SMTP server, connecting included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The notifier of `settings`, started; `None` when notifications are off. Fails on an SMTP URL
/// or sender address lettre does not take, so a wrong setting stops the api at start.
pub fn start(
    settings: &fp_settings::Settings,
    pool: PgPool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(Arc<Notify>, tokio::task::JoinHandle<()>)>> {
    let config = &settings.notifications;
    if !config.enabled {
        return Ok(None);
    }
    let mailer = Mailer::new(config.smtp_url.expose_secret(), &config.from, SEND_TIMEOUT)?;
    let wakeup = Arc::new(Notify::new());
    let notifier = Notifier {
        pool,
        mailer,
        failing_after: config.failing_after,
        disable_after: settings.api.disable_failing_endpoints_after,
        dashboard_url: settings.dashboard.public_url.clone(),
        wakeup: wakeup.clone(),
    };
    tracing::info!(failing_after = ?config.failing_after, "endpoint notifications on");
    Ok(Some((wakeup, tokio::spawn(notifier.run(stop)))))
}

pub struct Notifier {
    pub pool: PgPool,
    pub mailer: Mailer,
    pub failing_after: Duration,
    /// `api.disable_failing_endpoints_after`: the "failing" email says when that will be.
    pub disable_after: Duration,
    /// `dashboard.public_url`, for the links.
    pub dashboard_url: String,
    /// Rung by the health recorder when it has recorded a failure.
    pub wakeup: Arc<Notify>,
}

impl Notifier {
    /// Sends what is due until `stop` turns true (the email in hand is finished first).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            for notice in [Notice::Disabled, Notice::Failing] {
                if let Err(error) = self.send_due(notice, &stop).await {
                    tracing::warn!(%error, ?notice, "could not look for notification emails; trying again later");
                }
            }
            tokio::select! {
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// Claims the emails of `notice` that are due, batch after batch, and sends each. Once `stop`
    /// turns true the rest of the batch is released unsent, for another replica or the next start.
    async fn send_due(
        &self,
        notice: Notice,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        loop {
            let claimed = {
                let mut conn = self.pool.get().await?;
                match notice {
                    Notice::Disabled => notices::claim_disabled(&mut conn, BATCH).await?,
                    Notice::Failing => {
                        let failing_before = Utc::now()
                            .checked_sub_signed(delta(self.failing_after))
                            .unwrap_or(DateTime::<Utc>::MIN_UTC);
                        notices::claim_failing(&mut conn, failing_before, BATCH).await?
                    }
                }
            };
            let full = claimed.len() as i64 == BATCH;
            for claimed in claimed {
                if *stop.borrow() {
                    self.release(notice, &claimed).await;
                } else {
                    self.send(notice, &claimed).await;
                }
            }
            if !full || *stop.borrow() {
                return Ok(());
            }
        }
    }

    /// Sends one claimed email; one that could not be sent is released for the next look.
    async fn send(&self, notice: Notice, claimed: &ClaimedNotice) {
        let kind = match notice {
            Notice::Failing => "failing",
            Notice::Disabled => "disabled",
        };
        let url = redact_url(&claimed.url);
        let outcome = match self.compose_and_send(notice, claimed).await {
            Ok(0) => {
                tracing::info!(tenant_id = %claimed.tenant_id, %url, kind, "endpoint notification not sent: the tenant has no admin");
                "no_admin"
            }
            Ok(recipients) => {
                tracing::info!(tenant_id = %claimed.tenant_id, %url, kind, recipients, "endpoint notification sent");
                "sent"
            }
            Err(error) => {
                tracing::warn!(tenant_id = %claimed.tenant_id, %url, kind, error = %format!("{error:#}"), "endpoint notification not sent; it is tried again later");
                self.release(notice, claimed).await;
                "failed"
            }
        };
        metrics::counter!("fp_api_notifications_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
    }

    /// Returns how many admins the email went to.
    async fn compose_and_send(
        &self,
        notice: Notice,
        claimed: &ClaimedNotice,
    ) -> anyhow::Result<usize> {
        let now = Utc::now();
        let failing_since = claimed.failing_since.or(claimed.disabled_at).unwrap_or(now);
        let (admins, last_failure) = {
            let mut conn = self.pool.get().await?;
            let admins = notices::admin_emails(&mut conn, claimed.tenant_id).await?;
            let last_failure = notices::last_failure(
                &mut conn,
                claimed.tenant_id,
                &claimed.url,
                failing_since,
                fp_contracts::INTERRUPTED_ERROR_KIND,
            )
            .await?;
            (admins, last_failure)
        };
        if admins.is_empty() {
            return Ok(0);
        }
        let endpoint = FailingEndpoint {
            url: claimed.url.clone(),
            failing_since,
            last_failure: last_failure.map(|failure| FailedAttempt {
                attempted_at: failure.attempted_at,
                error_kind: failure.error_kind,
                response_status: failure
                    .response_status
                    .and_then(|status| u16::try_from(status).ok()),
            }),
            dashboard_url: self.dashboard_url.clone(),
        };
        let email = match notice {
            Notice::Failing => notification::failing_email(
                &endpoint,
                now,
                fp_domain::endpoint_health::disable_time(failing_since, self.disable_after),
            ),
            Notice::Disabled => {
                notification::disabled_email(&endpoint, claimed.disabled_at.unwrap_or(now))
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, self.mailer.send(&admins, &email))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the SMTP server did not take it within {SEND_TIMEOUT:?}")
            })??;
        Ok(admins.len())
    }

    async fn release(&self, notice: Notice, claimed: &ClaimedNotice) {
        let released = match self.pool.get().await {
            Ok(mut conn) => notices::release(&mut conn, notice, claimed).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = released {
            tracing::error!(tenant_id = %claimed.tenant_id, %error, ?notice, "an unsent endpoint notification could not be released: it is not sent");
        }
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}
