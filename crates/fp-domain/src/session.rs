//! Dashboard sessions: a random token in the browser's cookie, only its SHA-256 hash in the
//! database (`user_sessions`, owned by fp-api), and the timeouts that end a session.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use ring::digest;

/// Every session token starts with this, so a leaked one is easy to recognise.
pub const PREFIX: &str = "fps_";

/// A session token: 256 random bits. Never Debug-printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// A new token from 32 random bytes the caller drew from a secure source.
    pub fn from_random(random: [u8; 32]) -> Self {
        SessionToken(format!("{PREFIX}{}", hex::encode(random)))
    }

    /// A token as a client sent it (cookie or `Authorization: Session`); unchecked, it is only
    /// ever hashed and looked up.
    pub fn from_client(token: &str) -> Self {
        SessionToken(token.trim().to_owned())
    }

    /// What the database stores and looks sessions up by. The token carries 256 random bits, so
    /// a slow password hash would add cost without adding safety.
    pub fn hash(&self) -> Vec<u8> {
        digest::digest(&digest::SHA256, self.0.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// The token itself, for the cookie and the api call that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SessionToken(<redacted>)")
    }
}

/// How long a session lives: it ends `idle` after its last use, and `absolute` after its start
/// whatever its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub idle: TimeDelta,
    pub absolute: TimeDelta,
}

/// A session is live at a moment when it was last used after `used_after` and created after
/// `created_after` (what the store filters by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSince {
    pub used_after: DateTime<Utc>,
    pub created_after: DateTime<Utc>,
}

impl SessionTimeouts {
    /// The bounds a session must be within to be live at `now`.
    pub fn live_since(&self, now: DateTime<Utc>) -> LiveSince {
        LiveSince {
            used_after: now - self.idle,
            created_after: now - self.absolute,
        }
    }

    /// When a session created at `created_at` and last used at `last_used_at` ends unless it is
    /// used again (and at the latest, at its absolute end).
    pub fn expires_at(
        &self,
        created_at: DateTime<Utc>,
        last_used_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        (last_used_at + self.idle).min(created_at + self.absolute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::at;

    const TIMEOUTS: SessionTimeouts = SessionTimeouts {
        idle: TimeDelta::minutes(30),
        absolute: TimeDelta::hours(12),
    };

    #[test]
    fn tokens_are_prefixed_hex_and_stored_as_their_hash() {
        let token = SessionToken::from_random([7; 32]);
        assert!(token.expose().starts_with("fps_"));
        assert_eq!(token.expose().len(), 4 + 64);
        assert_eq!(token.hash().len(), 32);
        assert_eq!(
            token.hash(),
            SessionToken::from_client(token.expose()).hash()
        );
        assert_ne!(token.hash(), SessionToken::from_random([8; 32]).hash());
        assert!(!token.hash().windows(4).any(|window| window == b"fps_"));
    }

    #[test]
    fn a_token_is_never_debug_printed() {
        let token = SessionToken::from_random([7; 32]);
        let printed = format!("{token:?}");
        assert!(!printed.contains("0707"), "{printed}");
    }

    /// Whether a session created at `created` and last used at `used` is live at `now`.
    fn is_live(created: DateTime<Utc>, used: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now < TIMEOUTS.expires_at(created, used)
    }

    #[test]
    fn a_session_ends_when_idle_or_old() {
        // Used a minute ago: live for another 29 minutes.
        assert!(is_live(at(0), at(0), at(29 * 60)));
        assert!(!is_live(at(0), at(0), at(30 * 60)));
        // Kept busy, it still ends 12 h after its start.
        let started = at(0);
        let just_used = at(12 * 3600 - 60);
        assert_eq!(TIMEOUTS.expires_at(started, just_used), at(12 * 3600));
        assert!(is_live(started, just_used, at(12 * 3600 - 1)));
        assert!(!is_live(started, just_used, at(12 * 3600)));
    }

    #[test]
    fn the_store_bounds_agree_with_the_rule() {
        let now = at(20 * 3600);
        let bounds = TIMEOUTS.live_since(now);
        assert_eq!(bounds.used_after, now - TimeDelta::minutes(30));
        assert_eq!(bounds.created_after, now - TimeDelta::hours(12));
        for (created, used) in [
            (at(8 * 3600 + 1), now),
            (at(8 * 3600), now),
            (at(19 * 3600), at(19 * 3600 + 30 * 60)),
        ] {
            let within = used > bounds.used_after && created > bounds.created_after;
            assert_eq!(within, is_live(created, used, now), "{created} {used}");
        }
    }
}
