//! Log-in throttling on the database, so it holds across api replicas and restarts: the rule is
//! `fp_domain::login_throttle`; this runs it over the locked rows of the attempt's keys.

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use fp_domain::login_throttle::{self, AttemptKey, Failures, Scope};
use fp_store::{AsyncConnection, PgConnection, StoreError, sessions};

/// Rows older than this are deleted as attempts come; longer than any rule's window.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(1);

/// A log-in attempt that passed the throttle; it counts as failed until [`Admitted::succeeded`].
pub struct Admitted {
    keys: [AttemptKey; 2],
}

/// How long the client must wait before its next attempt.
pub struct Refused {
    pub retry_after: TimeDelta,
}

/// Admits or refuses an attempt of `email` from `client` at `now`, before any password is checked.
/// An admitted attempt is counted at once, so parallel guesses cannot all get through.
pub async fn admit(
    conn: &mut PgConnection,
    email: &str,
    client: IpAddr,
    now: DateTime<Utc>,
) -> Result<Result<Admitted, Refused>, StoreError> {
    let keys = login_throttle::attempt_keys(email, client);
    let names = keys.clone().map(|key| key.key);
    let scopes = keys.clone().map(|key| key.scope);
    let admitted = conn
        .transaction(async |conn| {
            sessions::forget_failures_before(conn, now - FORGET_AFTER).await?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let failures = sessions::lock_failures(conn, &names, now).await?;
            let current: Vec<(Scope, Failures)> = scopes.into_iter().zip(failures).collect();
            if let Some(retry_after) = login_throttle::refusal(current.iter().copied(), now) {
                return Ok::<_, StoreError>(Err(Refused { retry_after }));
            }
            for (name, (scope, failures)) in names.iter().zip(current) {
                sessions::save_failures(conn, name, failures.after_attempt(scope.rule(), now))
                    .await?;
            }
            Ok(Ok(()))
        })
        .await?;
    Ok(admitted.map(|()| Admitted { keys }))
}

impl Admitted {
    /// The password was right: the attempt no longer counts as a failure.
    pub async fn succeeded(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        conn.transaction(async |conn| {
            let names: Vec<&str> = self.keys.iter().map(|key| key.key.as_str()).collect();
            let failures = sessions::lock_failures(conn, &names, now).await?;
            for (key, failures) in self.keys.iter().zip(failures) {
                sessions::save_failures(conn, &key.key, failures.after_success(key.scope)).await?;
            }
            Ok(())
        })
        .await
    }
}
