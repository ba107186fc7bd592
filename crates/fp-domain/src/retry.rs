//! What happens after an attempt: success, another try later, or give up; and when the next try is.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::format::EndpointFormat;

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another try (a temporary failure, or one the receiver may fix).
    Retry,
    /// Trying again cannot help: the endpoint is gone or refuses us for good.
    GiveUp,
}

/// Why an attempt got no HTTP answer. [`FailureKind::as_str`] is the attempt record's
/// `error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The SSRF policy refused the target; no packet was sent.
    Blocked,
    Dns,
    /// Nothing accepted the connection on that port.
    ConnectionRefused,
    /// Any other failure to connect (unreachable host, reset).
    Connect,
    Tls(TlsFailure),
    Timeout,
    Other,
}

/// Why the TLS handshake failed, as far as the fix differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted root.
    UnknownAuthority,
    /// The certificate signs itself (or a CA certificate is served as the server's own).
    SelfSigned,
    Expired,
    /// The certificate does not name the URL's host.
    WrongHost,
    /// Anything else (protocol versions, ciphers, a broken handshake), and attempts recorded
    /// before the reasons were told apart.
    Other,
}

impl FailureKind {
    /// Every kind, each once.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::Blocked,
        FailureKind::Dns,
        FailureKind::ConnectionRefused,
        FailureKind::Connect,
        FailureKind::Tls(TlsFailure::UnknownAuthority),
        FailureKind::Tls(TlsFailure::SelfSigned),
        FailureKind::Tls(TlsFailure::Expired),
        FailureKind::Tls(TlsFailure::WrongHost),
        FailureKind::Tls(TlsFailure::Other),
        FailureKind::Timeout,
        FailureKind::Other,
    ];

    pub fn verdict(self) -> Verdict {
        match self {
            FailureKind::Blocked => Verdict::GiveUp,
            FailureKind::Dns
            | FailureKind::ConnectionRefused
            | FailureKind::Connect
            | FailureKind::Tls(_)
            | FailureKind::Timeout
            | FailureKind::Other => Verdict::Retry,
        }
    }

    /// The attempt record's `error_kind` (also the dispatcher's outcome label). Refused
    /// connections and the TLS reasons have kinds of their own since issue 14; older rows say
    /// `connect` and `tls` for them, which still read back as `Connect` and `Tls(Other)`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Blocked => "blocked",
            FailureKind::Dns => "dns",
            FailureKind::ConnectionRefused => "connection_refused",
            FailureKind::Connect => "connect",
            FailureKind::Tls(TlsFailure::UnknownAuthority) => "tls_unknown_authority",
            FailureKind::Tls(TlsFailure::SelfSigned) => "tls_self_signed",
            FailureKind::Tls(TlsFailure::Expired) => "tls_expired",
            FailureKind::Tls(TlsFailure::WrongHost) => "tls_wrong_host",
            FailureKind::Tls(TlsFailure::Other) => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Other => "other",
        }
    }

    /// The kind a record's `error_kind` names; `None` for kinds that are no transport failure
    /// (`redirect`, `http_status`, `interrupted`) and anything unknown.
    pub fn from_record_kind(kind: &str) -> Option<Self> {
        FailureKind::ALL
            .into_iter()
            .find(|failure| failure.as_str() == kind)
    }
}

/// Slack's plain-text error bodies that mean the webhook will never accept a message again.
const SLACK_PERMANENT_ERRORS: &[&str] = &[
    "no_service",
    "channel_is_archived",
    "channel_not_found",
    "invalid_token",
    "action_prohibited",
    "no_active_hooks",
];

/// Judges an HTTP answer. 2xx is success; 410, and the Slack and Discord answers that mean the
/// webhook is gone, end the delivery; everything else (3xx, other 4xx, 5xx) is tried again, since
/// receivers fix misconfigurations and outages, as Svix and Stripe assume.
pub fn judge_response(format: EndpointFormat, status: u16, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    if status == 410 {
        return Verdict::GiveUp;
    }
    match format {
        EndpointFormat::Slack => {
            let text = String::from_utf8_lossy(body);
            let code = text.trim();
            if matches!(status, 403 | 404) || SLACK_PERMANENT_ERRORS.contains(&code) {
                Verdict::GiveUp
            } else {
                Verdict::Retry
            }
        }
        // Discord: 404 is a deleted webhook, 401/403 a revoked token.
        EndpointFormat::Discord if matches!(status, 401 | 403 | 404) => Verdict::GiveUp,
        EndpointFormat::Custom | EndpointFormat::Discord => Verdict::Retry,
    }
}

/// `Retry-After` as seconds (integer or decimal, as Discord sends) or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The waits between attempts. Attempt 1 is immediate; attempt `n + 1` waits `delays[n - 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a retry schedule such as `5s,5m,30m,2h` (units: ms, s, m, h, d)")]
pub struct InvalidSchedule(pub String);

/// Jitter keeps a burst of failures from retrying in lockstep: each wait is drawn from
/// [80 %, 100 %] of its step, so it never exceeds the step's queue delay.
const JITTER_SHARE: f64 = 0.2;

/// The delay a retry should wait, and the broker delay tier that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRetry {
    /// Which attempt this will be.
    pub attempt_number: u32,
    /// The wait for this message (at most `tier`).
    pub delay: Duration,
    /// The delay queue's own TTL; a message waits between `delay` and `tier`.
    pub tier: Duration,
}

impl RetrySchedule {
    /// Roughly Svix's schedule, stretched over a day: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
    /// 20 h, 24 h; ten attempts in all.
    pub fn standard() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        RetrySchedule {
            delays: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                hours(2),
                hours(5),
                hours(10),
                hours(14),
                hours(20),
                hours(24),
            ],
        }
    }

    pub fn parse(text: &str) -> Result<Self, InvalidSchedule> {
        let invalid = || InvalidSchedule(text.to_owned());
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|step| !step.is_empty())
            .map(|step| parse_duration(step).ok_or_else(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { delays })
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The distinct delays, ascending: one broker queue each.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers = self.delays.clone();
        tiers.sort_unstable();
        tiers.dedup();
        tiers
    }

    /// The retry after attempt `attempt_number` failed, or `None` when that was the last.
    /// `jitter` is a random number in [0, 1) drawn by the caller; `retry_after` is the receiver's
    /// request, honoured up to the longest tier.
    pub fn next_retry(
        &self,
        attempt_number: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<PlannedRetry> {
        let index = usize::try_from(attempt_number).ok()?.checked_sub(1)?;
        let step = *self.delays.get(index)?;
        let jittered = step.mul_f64(1.0 - JITTER_SHARE * jitter.clamp(0.0, 1.0));
        let wanted = jittered.max(retry_after.unwrap_or(Duration::ZERO));
        let tiers = self.tiers();
        let tier = tiers
            .iter()
            .copied()
            .find(|tier| *tier >= wanted)
            .or_else(|| tiers.last().copied())?;
        Some(PlannedRetry {
            attempt_number: attempt_number + 1,
            delay: wanted.min(tier),
            tier,
        })
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::standard()
    }
}

/// A positive duration in config form: a whole number and a unit, `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(step: &str) -> Option<Duration> {
    let split = step.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = step.split_at(split);
    let number: u64 = number.parse().ok()?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        "h" => Duration::from_secs(number.checked_mul(3600)?),
        "d" => Duration::from_secs(number.checked_mul(86_400)?),
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn responses_are_judged_by_status_and_service() {
        use EndpointFormat::*;
        let cases: &[(EndpointFormat, u16, &str, Verdict)] = &[
            (Custom, 200, "", Verdict::Delivered),
            (Custom, 204, "", Verdict::Delivered),
            (Custom, 302, "", Verdict::Retry),
            (Custom, 400, "", Verdict::Retry),
            (Custom, 404, "", Verdict::Retry),
            (Custom, 408, "", Verdict::Retry),
            (Custom, 410, "", Verdict::GiveUp),
            (Custom, 425, "", Verdict::Retry),
            (Custom, 429, "", Verdict::Retry),
            (Custom, 500, "", Verdict::Retry),
            (Custom, 503, "", Verdict::Retry),
            (Slack, 200, "ok", Verdict::Delivered),
            (Slack, 404, "no_service", Verdict::GiveUp),
            (Slack, 410, "channel_is_archived", Verdict::GiveUp),
            (Slack, 403, "invalid_token", Verdict::GiveUp),
            (Slack, 400, "no_service", Verdict::GiveUp),
            (Slack, 400, "invalid_blocks", Verdict::Retry),
            (Slack, 429, "rate_limited", Verdict::Retry),
            (Slack, 500, "", Verdict::Retry),
            (Discord, 204, "", Verdict::Delivered),
            (
                Discord,
                404,
                r#"{"message": "Unknown Webhook", "code": 10015}"#,
                Verdict::GiveUp,
            ),
            (Discord, 401, "", Verdict::GiveUp),
            (Discord, 429, r#"{"retry_after": 1.5}"#, Verdict::Retry),
            (Discord, 502, "", Verdict::Retry),
        ];
        for (format, status, body, verdict) in cases {
            assert_eq!(
                judge_response(*format, *status, body.as_bytes()),
                *verdict,
                "{format:?} {status} {body}"
            );
        }
        assert_eq!(FailureKind::Blocked.verdict(), Verdict::GiveUp);
        assert_eq!(FailureKind::Timeout.verdict(), Verdict::Retry);
        assert_eq!(
            FailureKind::Tls(TlsFailure::Expired).verdict(),
            Verdict::Retry
        );
    }

    #[test]
    fn record_kinds_read_back_as_their_failure_kind() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_record_kind(kind.as_str()), Some(kind));
        }
        // Rows written before the finer kinds.
        assert_eq!(
            FailureKind::from_record_kind("tls"),
            Some(FailureKind::Tls(TlsFailure::Other))
        );
        assert_eq!(
            FailureKind::from_record_kind("connect"),
            Some(FailureKind::Connect)
        );
        for other in ["redirect", "http_status", "interrupted", "", "TLS"] {
            assert_eq!(FailureKind::from_record_kind(other), None, "{other}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_decimals_and_dates() {
        let now = Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 27, 0)
            .single()
            .expect("time");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn standard_schedule_makes_ten_attempts_with_bounded_jitter() {
        let schedule = RetrySchedule::standard();
        assert_eq!(schedule.max_attempts(), 10);
        let first = schedule.next_retry(1, None, 0.0).expect("a retry");
        assert_eq!(first.attempt_number, 2);
        assert_eq!(first.delay, Duration::from_secs(5));
        assert_eq!(first.tier, Duration::from_secs(5));
        let jittered = schedule.next_retry(1, None, 0.999).expect("a retry");
        assert!(
            jittered.delay >= Duration::from_secs(4) && jittered.delay <= Duration::from_secs(5)
        );
        assert_eq!(
            schedule.next_retry(9, None, 0.5).map(|r| r.tier),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(schedule.next_retry(10, None, 0.5), None);
        assert_eq!(schedule.next_retry(0, None, 0.5), None);
    }

    #[test]
    fn retry_after_moves_a_retry_to_a_later_tier_but_never_past_the_last() {
        let schedule = RetrySchedule::standard();
        let asked = schedule
            .next_retry(1, Some(Duration::from_secs(30)), 0.0)
            .expect("a retry");
        assert_eq!(asked.delay, Duration::from_secs(30));
        assert_eq!(asked.tier, Duration::from_secs(300));
        let greedy = schedule
            .next_retry(1, Some(Duration::from_secs(7 * 24 * 3600)), 0.0)
            .expect("a retry");
        assert_eq!(greedy.delay, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn schedules_parse_from_config_text() {
        let schedule = RetrySchedule::parse("500ms, 1s,2m,1h").expect("valid");
        assert_eq!(
            schedule.tiers(),
            vec![
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert_eq!(schedule.max_attempts(), 5);
        assert_eq!(parse_duration("5d"), Some(Duration::from_secs(5 * 86_400)));
        for bad in ["5", "5x", "0s", "s", "1.5s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RetrySchedule::parse("").map(|s| s.max_attempts()), Ok(1));
    }
}
