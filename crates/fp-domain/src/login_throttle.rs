//! Log-in throttling that cannot lock anyone out: failed log-ins are counted per (email, client
//! address) and per client address, never per email alone, so a guesser slows down and then stops
//! only itself; the account's owner, from any other address, still gets in.
//!
//! Each key allows a few failures freely, then asks for a growing pause between attempts (the
//! "slow down"), and after its limit refuses until its window ends. Every admitted attempt counts
//! as a failure until it succeeds (see [`Failures::after_success`]), so parallel guesses cannot all
//! slip through before the first of them is counted. Callers pass the time; the store keeps one
//! [`Failures`] per key.

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};

/// Emails are at most 254 characters; a longer form value must not make a longer key.
pub const MAX_EMAIL_KEY_CHARS: usize = 254;

/// How one kind of key is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Failures within a window after which the key is refused until the window ends.
    pub limit: i32,
    /// Failures allowed without a pause.
    pub free_failures: i32,
    /// The pause after the first failure beyond the free ones; it doubles with each further one.
    pub first_pause: TimeDelta,
    pub max_pause: TimeDelta,
    /// Counting starts with a key's first failure and ends this long after it.
    pub window: TimeDelta,
}

/// What an attempt is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One email from one client: what a guesser at one account from one place fails.
    EmailFromClient,
    /// Everything from one client: a guesser trying many accounts.
    Client,
}

impl Scope {
    pub fn rule(self) -> ThrottleRule {
        match self {
            Scope::EmailFromClient => ThrottleRule {
                limit: 10,
                free_failures: 3,
                first_pause: TimeDelta::seconds(2),
                max_pause: TimeDelta::seconds(60),
                window: TimeDelta::minutes(15),
            },
            // Wide enough for an office behind one address, where many people mistype.
            Scope::Client => ThrottleRule {
                limit: 50,
                free_failures: 20,
                first_pause: TimeDelta::seconds(1),
                max_pause: TimeDelta::seconds(15),
                window: TimeDelta::minutes(15),
            },
        }
    }
}

/// A key and what it is counted as; the store keeps the key's [`Failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptKey {
    pub key: String,
    pub scope: Scope,
}

/// How the key of an email from a client begins: the client follows, then a space and the email
/// (lower-cased, at most [`MAX_EMAIL_KEY_CHARS`] characters). Deleting a tenant finds its users'
/// failures by it.
pub const EMAIL_FROM_CLIENT_KEY_PREFIX: &str = "email-from-client:";

/// The keys a log-in attempt of `email` from `client` is counted against.
pub fn attempt_keys(email: &str, client: IpAddr) -> [AttemptKey; 2] {
    let client = client_key(client);
    let email: String = email
        .trim()
        .chars()
        .take(MAX_EMAIL_KEY_CHARS)
        .flat_map(char::to_lowercase)
        .collect();
    [
        AttemptKey {
            key: format!("{EMAIL_FROM_CLIENT_KEY_PREFIX}{client} {email}"),
            scope: Scope::EmailFromClient,
        },
        AttemptKey {
            key: format!("client:{client}"),
            scope: Scope::Client,
        },
    ]
}

/// One client, as far as throttling can tell: an IPv6 client usually holds a whole /64, and an
/// IPv4-mapped address is the IPv4 client.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The failures of one key in its current window. A key without failures has `count` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub count: i32,
    pub window_started_at: DateTime<Utc>,
    pub last_failure_at: DateTime<Utc>,
}

impl Failures {
    /// A key that has not failed (yet), as of `now`.
    pub fn none(now: DateTime<Utc>) -> Self {
        Failures {
            count: 0,
            window_started_at: now,
            last_failure_at: now,
        }
    }

    /// The failures that still count at `now` under `rule`: none once the window has passed.
    fn current(self, rule: ThrottleRule, now: DateTime<Utc>) -> Self {
        if self.count <= 0 || now >= self.window_started_at + rule.window {
            Failures::none(now)
        } else {
            self
        }
    }

    /// How long the key must wait at `now` before another attempt, if it must.
    pub fn refusal(self, rule: ThrottleRule, now: DateTime<Utc>) -> Option<TimeDelta> {
        let current = self.current(rule, now);
        if current.count >= rule.limit {
            return Some(current.window_started_at + rule.window - now);
        }
        let beyond_free = current.count - rule.free_failures;
        if beyond_free <= 0 {
            return None;
        }
        let pause = (1..beyond_free)
            .try_fold(rule.first_pause, |pause, _| pause.checked_add(&pause))
            .unwrap_or(rule.max_pause)
            .min(rule.max_pause);
        let wait = current.last_failure_at + pause - now;
        (wait > TimeDelta::zero()).then_some(wait)
    }

    /// The key's failures after an attempt admitted at `now`, counted as failed until it
    /// succeeds.
    pub fn after_attempt(self, rule: ThrottleRule, now: DateTime<Utc>) -> Self {
        let current = self.current(rule, now);
        Failures {
            count: current.count + 1,
            window_started_at: current.window_started_at,
            last_failure_at: now,
        }
    }

    /// The key's failures once the attempt counted by [`Failures::after_attempt`] succeeded: the
    /// email-and-client pair starts afresh (its owner is back), a client loses that one count.
    pub fn after_success(self, scope: Scope) -> Self {
        match scope {
            Scope::EmailFromClient => Failures::none(self.last_failure_at),
            Scope::Client => Failures {
                count: (self.count - 1).max(0),
                ..self
            },
        }
    }
}

/// The longest wait any of the attempt's keys asks for at `now`; `None` admits the attempt.
pub fn refusal(
    keys: impl IntoIterator<Item = (Scope, Failures)>,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    keys.into_iter()
        .filter_map(|(scope, failures)| failures.refusal(scope.rule(), now))
        .max()
}

/// A wait as whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: TimeDelta) -> i64 {
    let whole = wait.num_seconds();
    let rounded_up = if wait > TimeDelta::seconds(whole) {
        whole + 1
    } else {
        whole
    };
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::at;

    /// Fails `times` attempts of `scope` at `every` seconds from `start`; the failures after.
    fn fail(scope: Scope, times: i32, start: i64, every: i64) -> Failures {
        (0..times).fold(Failures::none(at(start)), |failures, n| {
            let now = at(start + i64::from(n) * every);
            assert_eq!(failures.refusal(scope.rule(), now), None, "attempt {n}");
            failures.after_attempt(scope.rule(), now)
        })
    }

    #[test]
    fn a_few_failures_are_free_then_each_asks_for_a_longer_pause() {
        let rule = Scope::EmailFromClient.rule();
        let failures = fail(Scope::EmailFromClient, 3, 0, 0);
        assert_eq!(failures.refusal(rule, at(0)), None, "three are free");
        let failures = failures.after_attempt(rule, at(0));
        assert_eq!(failures.refusal(rule, at(0)), Some(TimeDelta::seconds(2)));
        assert_eq!(failures.refusal(rule, at(1)), Some(TimeDelta::seconds(1)));
        assert_eq!(failures.refusal(rule, at(2)), None);
        let failures = failures.after_attempt(rule, at(2));
        assert_eq!(failures.refusal(rule, at(2)), Some(TimeDelta::seconds(4)));
        // Doubling up to the cap.
        let failures = (0..4).fold(failures, |failures, _| {
            failures.after_attempt(rule, at(100))
        });
        assert_eq!(failures.count, 9);
        assert_eq!(
            failures.refusal(rule, at(100)),
            Some(TimeDelta::seconds(60))
        );
    }

    #[test]
    fn at_the_limit_the_key_waits_for_its_window_to_end() {
        let rule = Scope::EmailFromClient.rule();
        let failures = fail(Scope::EmailFromClient, 10, 0, 61);
        let last = at(9 * 61);
        let window_end = at(15 * 60);
        assert_eq!(failures.refusal(rule, last), Some(window_end - last));
        assert_eq!(
            failures.refusal(rule, window_end - TimeDelta::seconds(1)),
            Some(TimeDelta::seconds(1))
        );
        // A new window: free again, counting from one.
        assert_eq!(failures.refusal(rule, window_end), None);
        assert_eq!(failures.after_attempt(rule, window_end).count, 1);
    }

    #[test]
    fn a_guesser_never_locks_out_another_client_or_another_email() {
        let now = at(9 * 61);
        let guesser: IpAddr = "198.51.100.7".parse().expect("ip");
        let owner: IpAddr = "203.0.113.9".parse().expect("ip");
        let [guessed_pair, guesser_client] = attempt_keys("Ann@Example.com", guesser);
        let locked = fail(Scope::EmailFromClient, 10, 0, 61);
        assert!(refusal([(guessed_pair.scope, locked)], now).is_some());

        // The owner's attempt is counted under other keys, which have not failed.
        let [owner_pair, owner_client] = attempt_keys("ann@example.com", owner);
        assert_ne!(owner_pair.key, guessed_pair.key);
        assert_ne!(owner_client.key, guesser_client.key);
        assert_eq!(
            refusal(
                [
                    (owner_pair.scope, Failures::none(now)),
                    (owner_client.scope, Failures::none(now))
                ],
                now
            ),
            None
        );
        // Another account from the guesser's client is held only by the client's own limit.
        let [other_pair, same_client] = attempt_keys("bob@example.com", guesser);
        assert_ne!(other_pair.key, guessed_pair.key);
        assert_eq!(same_client.key, guesser_client.key);
    }

    #[test]
    fn a_client_is_limited_across_emails() {
        let rule = Scope::Client.rule();
        let failures = fail(Scope::Client, 20, 0, 0);
        assert_eq!(failures.refusal(rule, at(0)), None);
        let failures = failures.after_attempt(rule, at(0));
        assert_eq!(failures.refusal(rule, at(0)), Some(TimeDelta::seconds(1)));
        let failures = fail(Scope::Client, 50, 0, 15);
        let last = at(49 * 15);
        assert_eq!(failures.refusal(rule, last), Some(at(15 * 60) - last));
    }

    #[test]
    fn keys_ignore_case_spaces_and_the_rest_of_an_ipv6_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        let v4: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            attempt_keys(" Ann@Example.COM ", a),
            attempt_keys("ann@example.com", b)
        );
        assert_eq!(attempt_keys("x@y", mapped), attempt_keys("x@y", v4));
        let long = "a".repeat(10_000);
        assert!(attempt_keys(&long, v4)[0].key.len() < 400);
    }

    #[test]
    fn success_clears_the_pair_and_uncounts_the_client() {
        let pair = fail(Scope::EmailFromClient, 4, 0, 0);
        assert_eq!(pair.after_success(Scope::EmailFromClient).count, 0);
        let client = fail(Scope::Client, 4, 0, 0);
        assert_eq!(client.after_success(Scope::Client).count, 3);
        assert_eq!(Failures::none(at(0)).after_success(Scope::Client).count, 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(TimeDelta::milliseconds(1)), 1);
        assert_eq!(retry_after_secs(TimeDelta::seconds(2)), 2);
        assert_eq!(retry_after_secs(TimeDelta::milliseconds(2001)), 3);
        assert_eq!(retry_after_secs(TimeDelta::zero()), 1);
    }
}
