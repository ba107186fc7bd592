//! PostgreSQL notifications that keep in-process caches true: a connection that `LISTEN`s on one
//! [`Channel`], and [`follow`], which keeps one listening (reconnecting with backoff) and tells a
//! [`Subscriber`] what it hears and whether it can hear. PostgreSQL keeps no notifications for a
//! listener that was away, so a subscriber must treat what it learned before a loss as unknown.
//!
//! The channels: [`crate::key_revocations`] (the api's key cache) and [`crate::config_changes`]
//! (the dispatcher's config cache), each notified by triggers at commit.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::StoreError;

/// A channel and how its listener shows itself.
pub struct Channel {
    /// What the triggers `pg_notify`.
    pub name: &'static str,
    /// The listening connection's `application_name`, so operators (and tests) can tell it apart
    /// in `pg_stat_activity`.
    pub application_name: &'static str,
    /// What is heard on it, for the logs ("api key revocations").
    pub heard: &'static str,
    /// What the process does while it cannot hear them, for the logs.
    pub while_deaf: &'static str,
}

/// Silence after which the connection is asked a `SELECT 1`: a peer that vanished without closing
/// (a network partition) would otherwise look like a quiet channel for as long as TCP takes.
const HEARTBEAT_AFTER: Duration = Duration::from_secs(10);
/// How long the heartbeat may take before the connection counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the connection closed")]
    Closed,
    #[error("the connection did not answer a heartbeat within {0:?}")]
    Unresponsive(Duration),
}

/// A connection listening on one channel.
pub struct Listener {
    conn: AsyncPgConnection,
}

impl Listener {
    /// Connects and listens; notifications committed from now on arrive.
    pub async fn listen(database_url: &str, channel: &Channel) -> Result<Self, StoreError> {
        let mut conn = crate::connect(database_url).await?;
        diesel::sql_query(format!(
            "SET application_name = '{}'",
            channel.application_name
        ))
        .execute(&mut conn)
        .await?;
        diesel::sql_query(format!("LISTEN {}", channel.name))
            .execute(&mut conn)
            .await?;
        Ok(Listener { conn })
    }

    /// The next notification's payload. An error means the connection is lost (closed, failed or
    /// unresponsive); the listener is of no more use then.
    pub async fn next(&mut self) -> Result<String, ListenError> {
        loop {
            let notification = {
                let mut notifications = std::pin::pin!(self.conn.notifications_stream());
                tokio::time::timeout(HEARTBEAT_AFTER, notifications.next()).await
            };
            match notification {
                Ok(Some(Ok(notification))) => return Ok(notification.payload),
                Ok(Some(Err(error))) => return Err(StoreError::from(error).into()),
                Ok(None) => return Err(ListenError::Closed),
                // Notifications that arrive meanwhile wait in the connection's queue.
                Err(_) => self.heartbeat().await?,
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), ListenError> {
        tokio::time::timeout(
            HEARTBEAT_TIMEOUT,
            diesel::sql_query("SELECT 1").execute(&mut self.conn),
        )
        .await
        .map_err(|_| ListenError::Unresponsive(HEARTBEAT_TIMEOUT))?
        .map_err(StoreError::from)?;
        Ok(())
    }
}

/// What [`follow`] tells.
pub trait Subscriber: Send + Sync + 'static {
    /// Listening (again): from now on every notification arrives. Whatever was notified while
    /// not listening was missed.
    fn started_listening(&self);
    /// A notification's payload.
    fn notified(&self, payload: &str);
    /// No longer listening: notifications go unheard until [`Subscriber::started_listening`].
    fn stopped_listening(&self);
}

/// First wait before listening again after the connection was lost; it doubles up to the most.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MOST: Duration = Duration::from_secs(10);

/// Listens on `channel` and tells `subscriber` until `stop` turns true, reconnecting (with
/// backoff) whenever the connection is lost.
pub async fn follow<S: Subscriber>(
    channel: &'static Channel,
    database_url: SecretString,
    subscriber: Arc<S>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_FIRST;
    // Logged once per outage, not once per attempt.
    let mut outage_logged = false;
    loop {
        let listener = tokio::select! {
            listener = Listener::listen(database_url.expose_secret(), channel) => listener,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        match listener {
            Ok(mut listener) => {
                subscriber.started_listening();
                if outage_logged {
                    tracing::info!(
                        channel = channel.name,
                        "listening for {} again",
                        channel.heard
                    );
                }
                backoff = RECONNECT_FIRST;
                let lost = loop {
                    let payload = tokio::select! {
                        payload = listener.next() => payload,
                        _ = stop.wait_for(|stopping| *stopping) => return,
                    };
                    match payload {
                        Ok(payload) => subscriber.notified(&payload),
                        Err(error) => break error.to_string(),
                    }
                };
                subscriber.stopped_listening();
                tracing::warn!(
                    channel = channel.name,
                    error = %lost,
                    "lost the listener for {}; {}",
                    channel.heard,
                    channel.while_deaf
                );
                // This outage is logged; listening again ends it.
                outage_logged = true;
            }
            Err(error) if !outage_logged => {
                tracing::warn!(
                    channel = channel.name,
                    %error,
                    "cannot listen for {}; {}",
                    channel.heard,
                    channel.while_deaf
                );
                outage_logged = true;
            }
            Err(error) => tracing::debug!(
                channel = channel.name,
                %error,
                "still cannot listen for {}",
                channel.heard
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MOST);
    }
}
