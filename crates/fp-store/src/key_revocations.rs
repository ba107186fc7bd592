//! Revoked API keys as they are revoked: a connection that `LISTEN`s on [`CHANNEL`], which a
//! trigger on `api_keys` notifies (migration `2026-12-06-000001_api_key_revocation_notify`) when a
//! live key is revoked, changed or deleted, whoever does it. The api drops such keys from its
//! in-process cache. PostgreSQL keeps no notifications for a listener that was away: after an
//! error here, whatever was revoked meanwhile is unknown.

use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;

use crate::StoreError;

/// The channel the trigger notifies; the payload is the hex of the key's hash.
pub const CHANNEL: &str = "fp_api_key_revoked";

/// The listening connection's `application_name`, so operators (and tests) can tell it apart in
/// `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "fp-api key revocations";

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

/// What a notification says.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The hash of the key that stopped being live.
    Key(Vec<u8>),
    /// A payload that names no key (someone else's `NOTIFY` on the channel): any key may be gone.
    Unknown,
}

/// A connection listening on [`CHANNEL`].
pub struct RevocationListener {
    conn: AsyncPgConnection,
}

impl RevocationListener {
    /// Connects and listens; notifications of revocations committed from now on arrive.
    pub async fn listen(database_url: &str) -> Result<Self, StoreError> {
        let mut conn = crate::connect(database_url).await?;
        diesel::sql_query(format!("SET application_name = '{APPLICATION_NAME}'"))
            .execute(&mut conn)
            .await?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(RevocationListener { conn })
    }

    /// Waits for the next revocation. An error means the connection is lost (closed, failed or
    /// unresponsive); the listener is of no more use then.
    pub async fn next(&mut self) -> Result<Revoked, ListenError> {
        loop {
            let notification = {
                let mut notifications = std::pin::pin!(self.conn.notifications_stream());
                tokio::time::timeout(HEARTBEAT_AFTER, notifications.next()).await
            };
            match notification {
                Ok(Some(Ok(notification))) => return Ok(parse_payload(&notification.payload)),
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

fn parse_payload(payload: &str) -> Revoked {
    match hex::decode(payload) {
        Ok(hash) if !hash.is_empty() => Revoked::Key(hash),
        _ => Revoked::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_a_hash_in_hex_or_names_no_key() {
        assert_eq!(parse_payload("00ff10"), Revoked::Key(vec![0, 255, 16]));
        assert_eq!(parse_payload(""), Revoked::Unknown);
        assert_eq!(parse_payload("not hex"), Revoked::Unknown);
    }
}
