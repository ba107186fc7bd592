//! How long delivery records and their payloads are kept.
//!
//! The platform keeps every delivery record for `retention.max_days` (whole partitions are
//! dropped after that). A tenant may have the payloads (request and response bodies and headers)
//! cleared sooner, after 1 to `max_days` days, and keep the rest of each record. One rule for the
//! api, which stores the choice, and the dashboard, which offers it.

/// The fewest days a tenant can keep payloads.
pub const MIN_PAYLOAD_DAYS: u32 = 1;

/// Why a payload retention was refused. The messages are the api's; the dashboard words each
/// variant in the user's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadDaysRefused {
    #[error(
        "must be at least {MIN_PAYLOAD_DAYS} day; null keeps payloads as long as the delivery \
         records ({max_days} days)"
    )]
    BelowMinimum { max_days: u32 },
    #[error(
        "must be at most {max_days}: delivery records, payloads included, are kept for \
         {max_days} days"
    )]
    AboveMaximum { max_days: u32 },
}

/// `days` if a tenant may keep payloads that long under a platform maximum of `max_days`.
pub fn check_payload_days(days: i64, max_days: u32) -> Result<u32, PayloadDaysRefused> {
    if days < i64::from(MIN_PAYLOAD_DAYS) {
        return Err(PayloadDaysRefused::BelowMinimum { max_days });
    }
    u32::try_from(days)
        .ok()
        .filter(|&days| days <= max_days)
        .ok_or(PayloadDaysRefused::AboveMaximum { max_days })
}

/// The retention a tenant's records are under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionInForce {
    /// The tenant's own payload retention, as stored; `None` when it chose none.
    pub tenant_payload_days: Option<u32>,
    /// How many days payloads are kept: the tenant's choice, never beyond the records.
    pub payload_days: u32,
    /// How many days delivery records are kept: the platform maximum.
    pub record_days: u32,
}

/// The retention in force for a tenant whose stored choice is `tenant_payload_days`. A choice
/// above `max_days` (stored before an operator lowered the maximum) is held to it, since the
/// records go with their payloads.
pub fn in_force(tenant_payload_days: Option<u32>, max_days: u32) -> RetentionInForce {
    RetentionInForce {
        tenant_payload_days,
        payload_days: tenant_payload_days.map_or(max_days, |days| days.min(max_days)),
        record_days: max_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_may_keep_payloads_from_one_day_to_the_platform_maximum() {
        assert_eq!(check_payload_days(1, 30), Ok(1));
        assert_eq!(check_payload_days(7, 30), Ok(7));
        assert_eq!(check_payload_days(30, 30), Ok(30));
    }

    #[test]
    fn zero_negative_and_beyond_the_maximum_are_refused_naming_the_bound() {
        assert_eq!(
            check_payload_days(0, 30),
            Err(PayloadDaysRefused::BelowMinimum { max_days: 30 })
        );
        assert_eq!(
            check_payload_days(-5, 30),
            Err(PayloadDaysRefused::BelowMinimum { max_days: 30 })
        );
        assert_eq!(
            check_payload_days(31, 30),
            Err(PayloadDaysRefused::AboveMaximum { max_days: 30 })
        );
        assert_eq!(
            check_payload_days(i64::MAX, 30),
            Err(PayloadDaysRefused::AboveMaximum { max_days: 30 })
        );
        assert_eq!(
            check_payload_days(31, 30).map_err(|refusal| refusal.to_string()),
            Err(
                "must be at most 30: delivery records, payloads included, are kept for 30 days"
                    .to_owned()
            )
        );
        assert!(
            check_payload_days(0, 14)
                .map_err(|refusal| refusal.to_string())
                .is_err_and(
                    |message| message.contains("at least 1 day") && message.contains("(14 days)")
                )
        );
    }

    #[test]
    fn without_a_choice_payloads_live_as_long_as_their_records() {
        assert_eq!(
            in_force(None, 30),
            RetentionInForce {
                tenant_payload_days: None,
                payload_days: 30,
                record_days: 30
            }
        );
    }

    #[test]
    fn a_choice_applies_within_the_maximum_and_is_held_to_a_lowered_one() {
        assert_eq!(in_force(Some(7), 30).payload_days, 7);
        assert_eq!(in_force(Some(7), 30).record_days, 30);
        let lowered = in_force(Some(20), 14);
        assert_eq!(lowered.payload_days, 14);
        assert_eq!(lowered.tenant_payload_days, Some(20));
    }
}
