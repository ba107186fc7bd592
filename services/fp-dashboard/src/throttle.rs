//! Log-in throttling: after [`EMAIL_LIMIT`] failed log-ins for one email, or [`CLIENT_LIMIT`] from
//! one client, within [`WINDOW`], further attempts for that key are refused until the oldest of
//! those failures leaves the window. Checked before the password hash runs, so it also caps the
//! CPU an attacker can make argon2 burn.
//!
//! The counters live in this process's memory (the dashboard's database role cannot write): each
//! dashboard process counts on its own, and a restart forgets. That is tiny state (at most a
//! limit's worth of instants per key that failed in the last window, pruned as it ages), and it
//! still bounds guessing to a few attempts per key and process.
//!
//! The logic takes the time as an argument, so tests drive it with their own clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const EMAIL_LIMIT: usize = 5;
pub const CLIENT_LIMIT: usize = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Emails are at most 254 characters; a longer form value must not make a longer key.
const MAX_EMAIL_KEY_CHARS: usize = 254;
/// How often keys whose failures have all aged out are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Email(String),
    Client(IpAddr),
}

impl Key {
    /// Case and surrounding spaces do not make another key.
    fn email(email: &str) -> Key {
        Key::Email(
            email
                .trim()
                .chars()
                .take(MAX_EMAIL_KEY_CHARS)
                .flat_map(char::to_lowercase)
                .collect(),
        )
    }

    /// An IPv6 client usually holds a whole /64, so that is one client.
    fn client(ip: IpAddr) -> Key {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(bits.into())
                }
            },
            v4 => v4,
        };
        Key::Client(ip)
    }

    fn limit(&self) -> usize {
        match self {
            Key::Email(_) => EMAIL_LIMIT,
            Key::Client(_) => CLIENT_LIMIT,
        }
    }
}

/// The attempt was refused; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// An admitted attempt, counted as failed until [`LoginThrottle::succeeded`] says otherwise.
#[derive(Debug)]
pub struct Admitted {
    email: Key,
    client: Option<Key>,
    at: Instant,
}

#[derive(Default)]
struct State {
    /// Instants of recent failed (or still running) attempts, oldest first; at most the key's
    /// limit of them, as older ones cannot matter.
    failures: HashMap<Key, VecDeque<Instant>>,
    last_sweep: Option<Instant>,
}

impl State {
    fn forget_old(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.failures.retain(|_, instants| {
            instants.retain(|at| in_window(*at, now));
            !instants.is_empty()
        });
    }

    /// When `key` may try again, if it is at its limit now.
    fn refusal(&self, key: &Key, now: Instant) -> Option<Duration> {
        let instants = self.failures.get(key)?;
        let recent: Vec<Instant> = instants
            .iter()
            .copied()
            .filter(|at| in_window(*at, now))
            .collect();
        if recent.len() < key.limit() {
            return None;
        }
        // The oldest counted failure leaving the window frees a slot.
        let oldest = recent[recent.len() - key.limit()];
        Some(WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
    }

    fn record(&mut self, key: &Key, at: Instant) {
        let limit = key.limit();
        let instants = self.failures.entry(key.clone()).or_default();
        instants.push_back(at);
        while instants.len() > limit {
            instants.pop_front();
        }
    }

    fn remove_one(&mut self, key: &Key, at: Instant) {
        if let Some(instants) = self.failures.get_mut(key) {
            if let Some(position) = instants.iter().position(|stored| *stored == at) {
                instants.remove(position);
            }
            if instants.is_empty() {
                self.failures.remove(key);
            }
        }
    }
}

fn in_window(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < WINDOW
}

#[derive(Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

impl LoginThrottle {
    /// Admits an attempt unless its email or client is at its limit. An admitted attempt counts as
    /// failed at once, so parallel attempts cannot all slip in before the first one fails.
    pub fn admit(
        &self,
        email: &str,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Admitted, Throttled> {
        let email = Key::email(email);
        let client = client.map(Key::client);
        // A poisoned lock only means another request panicked mid-update; the counters are
        // still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.forget_old(now);
        let wait = [Some(&email), client.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|key| state.refusal(key, now))
            .max();
        if let Some(retry_after) = wait {
            return Err(Throttled { retry_after });
        }
        state.record(&email, now);
        if let Some(client) = &client {
            state.record(client, now);
        }
        Ok(Admitted {
            email,
            client,
            at: now,
        })
    }

    /// The password was right: the email starts afresh, and this attempt does not count against
    /// the client.
    pub fn succeeded(&self, attempt: Admitted) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.failures.remove(&attempt.email);
        if let Some(client) = &attempt.client {
            state.remove_one(client, attempt.at);
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failures
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)));

    fn fail(throttle: &LoginThrottle, email: &str, client: Option<IpAddr>, now: Instant) {
        throttle.admit(email, client, now).expect("below the limit");
    }

    #[test]
    fn the_sixth_attempt_for_an_email_is_refused_until_the_window_passes() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for minute in 0..5 {
            fail(
                &throttle,
                "a@acme.example",
                OFFICE,
                start + Duration::from_secs(minute * 60),
            );
        }
        let refused = throttle
            .admit("A@Acme.example ", None, start + Duration::from_secs(5 * 60))
            .expect_err("the email is at its limit");
        assert_eq!(refused.retry_after, Duration::from_secs(10 * 60));
        // Another email from the same client is still admitted.
        fail(
            &throttle,
            "b@acme.example",
            OFFICE,
            start + Duration::from_secs(301),
        );
        // Once the first failure is 15 minutes old, one more attempt may run.
        assert!(
            throttle
                .admit(
                    "a@acme.example",
                    None,
                    start + WINDOW - Duration::from_secs(1)
                )
                .is_err()
        );
        fail(&throttle, "a@acme.example", None, start + WINDOW);
        assert!(
            throttle
                .admit("a@acme.example", None, start + WINDOW)
                .is_err()
        );
    }

    #[test]
    fn a_success_resets_the_email_and_does_not_count_against_the_client() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..4 {
            fail(&throttle, "a@acme.example", OFFICE, now);
        }
        let attempt = throttle
            .admit("a@acme.example", OFFICE, now)
            .expect("fifth attempt");
        throttle.succeeded(attempt);
        for _ in 0..4 {
            fail(&throttle, "a@acme.example", OFFICE, now);
        }
        // 8 failures counted against the client, not 9.
        for n in 0..12 {
            fail(&throttle, &format!("user{n}@acme.example"), OFFICE, now);
        }
        let refused = throttle
            .admit("new@acme.example", OFFICE, now)
            .expect_err("the client is at 20");
        assert_eq!(refused.retry_after, WINDOW);
    }

    #[test]
    fn one_client_is_refused_after_twenty_failures_whatever_the_email() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for n in 0..CLIENT_LIMIT {
            fail(&throttle, &format!("user{n}@acme.example"), OFFICE, now);
        }
        assert!(throttle.admit("other@acme.example", OFFICE, now).is_err());
        let elsewhere = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)));
        fail(&throttle, "other@acme.example", elsewhere, now);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for n in 0..CLIENT_LIMIT {
            let ip: IpAddr = format!("2001:db8:1:2::{n:x}").parse().expect("address");
            fail(&throttle, &format!("user{n}@acme.example"), Some(ip), now);
        }
        let same_net: IpAddr = "2001:db8:1:2:ffff::1".parse().expect("address");
        assert!(
            throttle
                .admit("x@acme.example", Some(same_net), now)
                .is_err()
        );
        let other_net: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        fail(&throttle, "x@acme.example", Some(other_net), now);
    }

    #[test]
    fn aged_out_keys_are_forgotten() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for n in 0..100 {
            fail(&throttle, &format!("user{n}@acme.example"), None, now);
        }
        assert_eq!(throttle.keys(), 100);
        fail(&throttle, "late@acme.example", None, now + WINDOW);
        assert_eq!(throttle.keys(), 1);
    }

    #[test]
    fn a_long_email_makes_a_bounded_key() {
        let long = "a".repeat(10_000);
        assert_eq!(
            Key::email(&long),
            Key::email(&"A".repeat(MAX_EMAIL_KEY_CHARS + 1))
        );
    }
}
