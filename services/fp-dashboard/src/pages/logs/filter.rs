//! The filters of the log pages. They live in the query string, so a filtered view can be
//! bookmarked and every paging link carries them; bad input becomes a message next to its field.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use fp_domain::event::EventType;
use fp_domain::time_zone::Tz;
use fp_store::attempts::{AttemptFilter, AttemptQuery, StatusFilter, decode_cursor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::local_time::from_wall_clock;
use crate::pages::percent_encode_query_value;

/// The event types a tenant's endpoint can receive (the filter's choices).
pub static EVENT_TYPES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| EventType::ALL.iter().map(|event| event.as_str()).collect());
/// The range shown when the user names none.
pub const DEFAULT_RANGE_DAYS: u64 = 7;
/// Entries per page.
pub const PAGE_SIZE: i64 = 50;

/// The query string as typed: echoed back into the form, and the source of the paging links.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FilterParams {
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Only on the admin view.
    #[serde(default)]
    pub tenant: String,
    /// Where the page starts (see `fp_store::attempts::encode_cursor`); not part of the form.
    #[serde(default)]
    pub cursor: String,
}

/// Field name → catalog path of the message shown next to that field.
pub type FieldErrors = BTreeMap<&'static str, &'static str>;

/// Parsed, valid filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    pub event_type: Option<String>,
    pub status: Option<StatusFilter>,
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// Neither end was given: the page says the last seven days are shown.
    pub default_range: bool,
    pub tenant: Option<Uuid>,
    pub cursor: Option<(DateTime<Utc>, Uuid)>,
}

impl FilterParams {
    /// Valid filters at `now`, or a message for every bad field; times are read in `zone` (the
    /// user's). `tenant` is read only where a tenant may be chosen (the admin view); the tenant
    /// view is scoped by the session instead.
    pub fn parse(
        &self,
        now: DateTime<Utc>,
        tenant_choice: bool,
        zone: Tz,
    ) -> Result<Filters, FieldErrors> {
        let mut errors = FieldErrors::new();
        let event_type = match self.event_type.trim() {
            "" => None,
            known if EVENT_TYPES.contains(&known) => Some(known.to_owned()),
            _ => {
                errors.insert("event_type", "logs.errors.event_type");
                None
            }
        };
        let status = match self.status.trim() {
            "" => None,
            text => text
                .parse()
                .map_err(|_| errors.insert("status", "logs.errors.status"))
                .ok(),
        };
        let from = optional_time(&self.from, false, zone, "from", &mut errors);
        let to = optional_time(&self.to, true, zone, "to", &mut errors);
        let tenant = match self.tenant.trim() {
            "" => None,
            _ if !tenant_choice => None,
            text => Uuid::parse_str(text)
                .map_err(|_| errors.insert("tenant", "logs.errors.tenant"))
                .ok(),
        };
        let cursor = match self.cursor.trim() {
            "" => None,
            text => decode_cursor(text)
                .ok_or(())
                .map_err(|()| errors.insert("cursor", "logs.errors.cursor"))
                .ok(),
        };
        let default_span = TimeDelta::days(DEFAULT_RANGE_DAYS as i64);
        let (from, to) = match (from, to) {
            (Some(from), Some(to)) => (from, to),
            (Some(from), None) => (from, now),
            (None, Some(to)) => (to - default_span, to),
            (None, None) => (now - default_span, now),
        };
        if errors.is_empty() && from >= to {
            errors.insert("to", "logs.errors.range");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Filters {
            event_type,
            status,
            from,
            to,
            default_range: self.from.trim().is_empty() && self.to.trim().is_empty(),
            tenant,
            cursor,
        })
    }

    /// The query string (with `?`, or empty) of these filters starting at `cursor`: the same
    /// filters the user typed, so the links of a page keep them.
    pub fn query_string(&self, cursor: Option<&str>) -> String {
        let pairs = [
            ("event_type", self.event_type.trim()),
            ("status", self.status.trim()),
            ("from", self.from.trim()),
            ("to", self.to.trim()),
            ("tenant", self.tenant.trim()),
            ("cursor", cursor.unwrap_or_default()),
        ];
        query_string(&pairs)
    }
}

/// `?name=value&…` of the pairs whose value is not empty (empty when none is), values encoded.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name}={}", percent_encode_query_value(value)))
        .collect();
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

impl Filters {
    /// The page of entries these filters ask for; `tenant_id` is the session's tenant, or on the
    /// admin view the chosen one.
    pub fn page_query(&self, tenant_id: Option<Uuid>) -> AttemptQuery {
        AttemptQuery {
            tenant_id,
            event_type: self.event_type.clone(),
            status: self.status,
            from: Some(self.from),
            to: Some(self.to),
            after: self.cursor,
            limit: PAGE_SIZE,
        }
    }

    /// The same attempts, for the chart and the summary (which ignore the page).
    pub fn statistics_filter(&self, tenant_id: Option<Uuid>) -> AttemptFilter {
        AttemptFilter {
            tenant_id,
            event_type: self.event_type.clone(),
            status: self.status,
            from: self.from,
            to: self.to,
        }
    }
}

/// `2026-11-27T09:30` (what `datetime-local` sends), with seconds, a plain date, or RFC 3339;
/// times without an offset are wall-clock times in `zone`. A plain date as the end of a range
/// includes that day.
fn parse_time(text: &str, end_of_range: bool, zone: Tz) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return from_wall_clock(time, zone);
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let date = if end_of_range {
        date.checked_add_days(Days::new(1))?
    } else {
        date
    };
    from_wall_clock(date.and_hms_opt(0, 0, 0)?, zone)
}

fn optional_time(
    text: &str,
    end_of_range: bool,
    zone: Tz,
    field: &'static str,
    errors: &mut FieldErrors,
) -> Option<DateTime<Utc>> {
    if text.trim().is_empty() {
        return None;
    }
    let time = parse_time(text, end_of_range, zone);
    if time.is_none() {
        errors.insert(field, "logs.errors.time");
    }
    time
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn params(pairs: &[(&str, &str)]) -> FilterParams {
        let mut params = FilterParams::default();
        for (name, value) in pairs {
            let field = match *name {
                "event_type" => &mut params.event_type,
                "status" => &mut params.status,
                "from" => &mut params.from,
                "to" => &mut params.to,
                "tenant" => &mut params.tenant,
                _ => &mut params.cursor,
            };
            *field = (*value).to_owned();
        }
        params
    }

    #[test]
    fn no_filters_mean_everything_of_the_last_seven_days() {
        let filters = FilterParams::default()
            .parse(now(), false, Tz::UTC)
            .expect("valid");
        assert_eq!(filters.to, now());
        assert_eq!(filters.from, now() - TimeDelta::days(7));
        assert!(filters.default_range);
        assert_eq!((filters.event_type, filters.status), (None, None));
    }

    #[test]
    fn filters_parse() {
        let filters = params(&[
            ("event_type", "webhook.test"),
            ("status", "5xx"),
            ("from", "2026-11-20T08:15"),
            ("to", "2026-11-21"),
        ])
        .parse(now(), false, Tz::UTC)
        .expect("valid");
        assert_eq!(filters.event_type.as_deref(), Some("webhook.test"));
        assert_eq!(filters.status, Some(StatusFilter::Class(5)));
        assert_eq!(
            filters.from,
            Utc.with_ymd_and_hms(2026, 11, 20, 8, 15, 0)
                .single()
                .expect("valid")
        );
        // A plain date as the end includes the whole day.
        assert_eq!(
            filters.to,
            Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0)
                .single()
                .expect("valid")
        );
        assert!(!filters.default_range);

        let only_end = params(&[("to", "2026-11-10T00:00:30")]).parse(now(), false, Tz::UTC);
        let only_end = only_end.expect("valid");
        assert_eq!(only_end.from, only_end.to - TimeDelta::days(7));
        let rfc = params(&[("from", "2026-11-26T10:00:00+02:00")]).parse(now(), false, Tz::UTC);
        assert_eq!(
            rfc.expect("valid").from,
            Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0)
                .single()
                .expect("valid")
        );
    }

    #[test]
    fn typed_times_are_read_in_the_users_zone() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("valid")
                .with_timezone(&Utc)
        };
        let berlin = params(&[("from", "2026-11-20T08:15"), ("to", "2026-11-21")])
            .parse(now(), false, Tz::Europe__Berlin)
            .expect("valid");
        assert_eq!(berlin.from, at("2026-11-20T07:15:00Z"));
        // The end of a day in Berlin, an hour before midnight UTC.
        assert_eq!(berlin.to, at("2026-11-21T23:00:00Z"));
        let new_york = params(&[("from", "2026-07-01 12:00")])
            .parse(now(), false, Tz::America__New_York)
            .expect("valid");
        assert_eq!(new_york.from, at("2026-07-01T16:00:00Z"));
        // A time with its own offset means that instant, whatever the user's zone.
        let offset = params(&[("from", "2026-11-26T10:00:00+02:00")])
            .parse(now(), false, Tz::America__New_York)
            .expect("valid");
        assert_eq!(offset.from, at("2026-11-26T08:00:00Z"));
    }

    #[test]
    fn every_bad_field_gets_its_message() {
        let errors = params(&[
            ("event_type", "<script>"),
            ("status", "6xx"),
            ("from", "yesterday"),
            ("to", "2026-13-01"),
            ("tenant", "acme"),
            ("cursor", "zz"),
        ])
        .parse(now(), true, Tz::UTC)
        .expect_err("invalid");
        assert_eq!(
            errors.keys().copied().collect::<Vec<_>>(),
            ["cursor", "event_type", "from", "status", "tenant", "to"]
        );
        assert_eq!(errors["from"], "logs.errors.time");

        let backwards =
            params(&[("from", "2026-11-20"), ("to", "2026-11-19")]).parse(now(), false, Tz::UTC);
        assert_eq!(
            backwards.expect_err("invalid").get("to"),
            Some(&"logs.errors.range")
        );
    }

    #[test]
    fn the_tenant_is_only_read_where_it_may_be_chosen() {
        let id = Uuid::now_v7();
        let with_tenant = params(&[("tenant", &id.to_string())]);
        assert_eq!(
            with_tenant
                .parse(now(), true, Tz::UTC)
                .expect("valid")
                .tenant,
            Some(id)
        );
        assert_eq!(
            with_tenant
                .parse(now(), false, Tz::UTC)
                .expect("valid")
                .tenant,
            None
        );
    }

    #[test]
    fn cursors_round_trip_and_links_keep_the_filters() {
        let id = Uuid::now_v7();
        let at = Utc
            .timestamp_micros(1_800_000_000_123_456)
            .single()
            .expect("valid");
        let cursor = fp_store::attempts::encode_cursor(at, id);
        let filters = params(&[("cursor", &cursor)])
            .parse(now(), false, Tz::UTC)
            .expect("valid");
        assert_eq!(filters.cursor, Some((at, id)));

        let typed = params(&[
            ("status", " 404 "),
            ("from", "2026-11-20T08:15"),
            ("event_type", "submission.created"),
            ("cursor", "old"),
        ]);
        assert_eq!(
            typed.query_string(Some("abc")),
            "?event_type=submission.created&status=404&from=2026-11-20T08%3A15&cursor=abc"
        );
        assert!(!typed.query_string(None).contains("cursor"));
        assert_eq!(FilterParams::default().query_string(None), "");
    }
}
