//! Times as the user reads them: in the user's zone (their choice on the Account page, else the
//! zone of their browser's language region, else UTC), with the instant in UTC beside it for the
//! `title` (hover) and the `datetime` attribute. Every time a page shows is a [`LocalTime`], which
//! templates print with `time::at` (`templates/time.html`); times typed into a form are read in
//! the same zone ([`from_wall_clock`]).

use actix_web::HttpRequest;
use actix_web::http::header;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use fp_domain::time_zone::{self, Tz};
use serde::Serialize;

/// How much of the time a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Minutes,
    Seconds,
}

impl Precision {
    fn format(self) -> &'static str {
        match self {
            Precision::Minutes => "%Y-%m-%d %H:%M",
            Precision::Seconds => "%Y-%m-%d %H:%M:%S",
        }
    }
}

/// One instant on a page: `<time datetime="{iso}" title="{utc}">{local}</time>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalTime {
    /// In the user's zone, with its abbreviation: `2026-12-03 19:12 CET`.
    pub local: String,
    /// The machine-readable instant (RFC 3339 in UTC) for `datetime`.
    pub iso: String,
    /// The same instant in UTC, for the hover: `2026-12-03 18:12 UTC`.
    pub utc: String,
}

impl LocalTime {
    pub fn new(at: DateTime<Utc>, zone: Tz, precision: Precision) -> Self {
        let format = precision.format();
        LocalTime {
            local: at
                .with_timezone(&zone)
                .format(&format!("{format} %Z"))
                .to_string(),
            iso: at.to_rfc3339_opts(SecondsFormat::Secs, true),
            utc: format!("{} UTC", at.format(format)),
        }
    }
}

/// The zone of a user who chose none: their browser's language region's (`Accept-Language`), or
/// UTC.
pub fn browser_zone(request: &HttpRequest) -> Tz {
    request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
        .map_or(time_zone::FALLBACK, time_zone::from_accept_language)
}

/// A user's zone: the stored choice if it is (still) a zone, else `default`.
pub fn user_zone(chosen: Option<&str>, default: Tz) -> Tz {
    chosen
        .and_then(|name| time_zone::parse(name).ok())
        .unwrap_or(default)
}

/// The instant a wall-clock time typed in `zone` names. A time the clocks pass twice (when they
/// go back) is the first of the two; one they skip (when they go forward) is read as if the clock
/// had not yet changed, as the hour after the gap (02:30 on the spring day in Berlin is 03:30 CEST).
pub fn from_wall_clock(time: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    zone.from_local_datetime(&time)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(time + TimeDelta::hours(1)))
                .earliest()
        })
        .map(|local| local.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn winter_and_summer_in_berlin() {
        let winter = LocalTime::new(
            utc("2026-12-03T18:12:05Z"),
            Tz::Europe__Berlin,
            Precision::Minutes,
        );
        assert_eq!(winter.local, "2026-12-03 19:12 CET");
        assert_eq!(winter.utc, "2026-12-03 18:12 UTC");
        assert_eq!(winter.iso, "2026-12-03T18:12:05Z");
        let summer = LocalTime::new(
            utc("2026-07-01T18:12:05Z"),
            Tz::Europe__Berlin,
            Precision::Seconds,
        );
        assert_eq!(summer.local, "2026-07-01 20:12:05 CEST");
        assert_eq!(summer.utc, "2026-07-01 18:12:05 UTC");
    }

    #[test]
    fn the_edges_of_daylight_saving_time() {
        // 2026-03-29: Berlin's clocks go from 02:00 CET to 03:00 CEST at 01:00 UTC.
        let show = |at| LocalTime::new(utc(at), Tz::Europe__Berlin, Precision::Seconds).local;
        assert_eq!(show("2026-03-29T00:59:59Z"), "2026-03-29 01:59:59 CET");
        assert_eq!(show("2026-03-29T01:00:00Z"), "2026-03-29 03:00:00 CEST");
        // 2026-10-25: back from 03:00 CEST to 02:00 CET at 01:00 UTC; 02:30 happens twice.
        assert_eq!(show("2026-10-25T00:30:00Z"), "2026-10-25 02:30:00 CEST");
        assert_eq!(show("2026-10-25T01:30:00Z"), "2026-10-25 02:30:00 CET");
        // New York, with its own abbreviations and dates.
        let new_york = LocalTime::new(
            utc("2026-12-04T03:00:00Z"),
            Tz::America__New_York,
            Precision::Minutes,
        );
        assert_eq!(new_york.local, "2026-12-03 22:00 EST");
        let plain = LocalTime::new(utc("2026-12-04T03:00:00Z"), Tz::UTC, Precision::Minutes);
        assert_eq!(plain.local, "2026-12-04 03:00 UTC");
    }

    #[test]
    fn typed_times_are_read_in_the_zone() {
        let wall = |text| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("valid wall-clock time")
        };
        let read = |text| from_wall_clock(wall(text), Tz::Europe__Berlin).expect("a time");
        assert_eq!(read("2026-12-03 19:12"), utc("2026-12-03T18:12:00Z"));
        assert_eq!(read("2026-07-01 20:12"), utc("2026-07-01T18:12:00Z"));
        // Twice: the first; skipped: as the hour after the gap, the same instant.
        assert_eq!(read("2026-10-25 02:30"), utc("2026-10-25T00:30:00Z"));
        assert_eq!(read("2026-03-29 02:30"), utc("2026-03-29T01:30:00Z"));
        assert_eq!(
            from_wall_clock(wall("2026-12-03 19:12"), Tz::America__New_York),
            Some(utc("2026-12-04T00:12:00Z"))
        );
    }

    #[test]
    fn the_users_choice_beats_the_browser() {
        assert_eq!(
            user_zone(Some("America/New_York"), Tz::Europe__Berlin),
            Tz::America__New_York
        );
        assert_eq!(user_zone(None, Tz::Europe__Berlin), Tz::Europe__Berlin);
        // A name the database no longer knows falls back rather than failing every page.
        assert_eq!(user_zone(Some("Mars/Olympus"), Tz::UTC), Tz::UTC);
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "de-AT,de;q=0.9"))
            .to_http_request();
        assert_eq!(browser_zone(&request), Tz::Europe__Vienna);
        let without = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(browser_zone(&without), Tz::UTC);
    }
}
