//! The attempts-over-time chart: counts per time bucket drawn as stacked bars (successes below,
//! failures above) in server-side SVG. Pure: the geometry is computed here, the markup is in
//! `templates/logs_chart.html`.

use chrono::{DateTime, TimeDelta, Utc};
use fp_domain::time_zone::Tz;
use fp_store::attempts::BucketCounts;
use serde::Serialize;

use crate::local_time::{LocalTime, Precision};

/// Bucket sizes to choose from (seconds), smallest first. The smallest fits the shortest range the
/// filters take (one minute) several times, so no bar is ever wider than the range.
const BUCKET_SIZES: [i64; 10] = [
    10,
    30,
    60,
    300,
    900,
    3600,
    3 * 3600,
    6 * 3600,
    86_400,
    7 * 86_400,
];
/// At most this many bars, so each stays wide enough to see.
const MAX_BARS: i64 = 60;
const DAY: i64 = 86_400;

/// The SVG's coordinate system (it scales to the page width through CSS).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Time labels under the x axis.
const X_LABELS: usize = 4;

/// The smallest bucket size that draws `[from, to)` in at most [`MAX_BARS`] bars; whole weeks for
/// ranges too long even for those.
pub fn bucket_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let span = (to - from).num_seconds().max(1);
    BUCKET_SIZES
        .into_iter()
        .find(|size| bars_for(span, *size) <= MAX_BARS)
        .unwrap_or_else(|| {
            let weeks = (span + 7 * DAY * MAX_BARS - 1) / (7 * DAY * MAX_BARS);
            weeks * 7 * DAY
        })
}

fn bars_for(span_seconds: i64, bucket_seconds: i64) -> i64 {
    (span_seconds + bucket_seconds - 1) / bucket_seconds
}

/// The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value`: the top of the y axis.
pub fn nice_ceiling(value: i64) -> i64 {
    let mut magnitude = 1_i64;
    loop {
        for step in [1_i64, 2, 5] {
            let candidate = step.saturating_mul(magnitude);
            if candidate >= value || candidate == i64::MAX {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Bar {
    /// When the bucket starts (in the user's zone), for the bar's tooltip.
    pub label: String,
    pub succeeded: i64,
    pub failed: i64,
    pub x: String,
    pub width: String,
    pub ok_y: String,
    pub ok_height: String,
    pub failed_y: String,
    pub failed_height: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct AxisLabel {
    pub text: String,
    pub x: String,
    pub y: String,
}

/// Everything `logs_chart.html` draws.
#[derive(Debug, Serialize)]
pub struct Chart {
    pub view_box: String,
    /// Only buckets with attempts get a bar.
    pub bars: Vec<Bar>,
    pub y_labels: Vec<AxisLabel>,
    pub x_labels: Vec<AxisLabel>,
    /// The axes' corner and ends.
    pub plot_left: String,
    pub plot_right: String,
    pub plot_top: String,
    pub plot_bottom: String,
    pub succeeded: i64,
    pub failed: i64,
    /// A bar's time span, the chart's title: `bucket_amount` of `bucket_unit`, a catalog key
    /// (`second`, `minute`, `hour`, `day` for one; `seconds`, ... for more).
    pub bucket_amount: i64,
    pub bucket_unit: &'static str,
}

fn coordinate(value: f64) -> String {
    format!("{value:.1}")
}

/// The chart of `counts` (from `attempts::counts_per_bucket` with the same range and size), its
/// times labelled in `zone`.
pub fn chart(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    counts: &[BucketCounts],
    zone: Tz,
) -> Chart {
    let span = (to - from).num_seconds().max(1);
    let buckets = bars_for(span, bucket_seconds).max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let bottom = HEIGHT - BOTTOM;
    let slot = plot_width / buckets as f64;
    let top_value = nice_ceiling(
        counts
            .iter()
            .map(|count| count.succeeded + count.failed)
            .max()
            .unwrap_or(0),
    );
    let scale = |value: i64| value as f64 / top_value as f64 * plot_height;
    let bucket_start = |index: i64| from + TimeDelta::seconds(index * bucket_seconds);
    let (bucket_amount, bucket_unit) = bucket_span(bucket_seconds);
    // Seconds only where bars are shorter than a minute.
    let (label_format, bar_precision) = if bucket_seconds >= DAY {
        ("%Y-%m-%d", Precision::Minutes)
    } else if bucket_seconds < 60 {
        ("%H:%M:%S", Precision::Seconds)
    } else {
        ("%m-%d %H:%M", Precision::Minutes)
    };

    let bars = counts
        .iter()
        .filter(|count| (0..buckets).contains(&count.bucket))
        .map(|count| {
            let ok_height = scale(count.succeeded);
            let failed_height = scale(count.failed);
            Bar {
                label: LocalTime::new(bucket_start(count.bucket), zone, bar_precision).local,
                succeeded: count.succeeded,
                failed: count.failed,
                // A small gap between neighbours.
                x: coordinate(LEFT + count.bucket as f64 * slot + slot * 0.1),
                width: coordinate((slot * 0.8).max(0.5)),
                ok_y: coordinate(bottom - ok_height),
                ok_height: coordinate(ok_height),
                failed_y: coordinate(bottom - ok_height - failed_height),
                failed_height: coordinate(failed_height),
            }
        })
        .collect();

    let y_values = if top_value % 2 == 0 {
        vec![0, top_value / 2, top_value]
    } else {
        vec![0, top_value]
    };
    let y_labels = y_values
        .into_iter()
        .map(|value| AxisLabel {
            text: value.to_string(),
            x: coordinate(LEFT - 6.0),
            y: coordinate(bottom - scale(value) + 4.0),
        })
        .collect();
    let x_labels = (0..X_LABELS)
        .map(|step| {
            let fraction = step as f64 / (X_LABELS - 1) as f64;
            let at = from + TimeDelta::seconds((span as f64 * fraction) as i64);
            AxisLabel {
                text: at.with_timezone(&zone).format(label_format).to_string(),
                x: coordinate(LEFT + plot_width * fraction),
                y: coordinate(HEIGHT - 8.0),
            }
        })
        .collect();

    Chart {
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        bars,
        y_labels,
        x_labels,
        plot_left: coordinate(LEFT),
        plot_right: coordinate(WIDTH - RIGHT),
        plot_top: coordinate(TOP),
        plot_bottom: coordinate(bottom),
        succeeded: counts.iter().map(|count| count.succeeded).sum(),
        failed: counts.iter().map(|count| count.failed).sum(),
        bucket_amount,
        bucket_unit,
    }
}

/// A bucket size as an amount of the largest unit that divides it, and the unit's catalog key.
fn bucket_span(bucket_seconds: i64) -> (i64, &'static str) {
    let (amount, one, more) = match bucket_seconds {
        seconds if seconds % DAY == 0 => (seconds / DAY, "day", "days"),
        seconds if seconds % 3600 == 0 => (seconds / 3600, "hour", "hours"),
        seconds if seconds % 60 == 0 => (seconds / 60, "minute", "minutes"),
        seconds => (seconds, "second", "seconds"),
    };
    (amount, if amount == 1 { one } else { more })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn the_bucket_size_follows_the_range() {
        assert_eq!(bucket_seconds(at(1, 0), at(1, 1)), 60);
        assert_eq!(bucket_seconds(at(1, 0), at(1, 2)), 300);
        assert_eq!(bucket_seconds(at(1, 0), at(1, 12)), 900);
        assert_eq!(bucket_seconds(at(1, 0), at(2, 0)), 3600);
        assert_eq!(bucket_seconds(at(1, 0), at(8, 0)), 3 * 3600);
        assert_eq!(bucket_seconds(at(1, 0), at(15, 0)), 6 * 3600);
        assert_eq!(bucket_seconds(at(1, 0), at(30, 0)), 86_400);
        let year = Utc
            .with_ymd_and_hms(2027, 11, 1, 0, 0, 0)
            .single()
            .expect("valid");
        assert_eq!(bucket_seconds(at(1, 0), year), 7 * 86_400);
        let decade = Utc
            .with_ymd_and_hms(2036, 11, 1, 0, 0, 0)
            .single()
            .expect("valid");
        let size = bucket_seconds(at(1, 0), decade);
        assert_eq!(size % (7 * 86_400), 0);
        assert!(bars_for((decade - at(1, 0)).num_seconds(), size) <= MAX_BARS);
        // A range of no length still gets a bucket.
        assert_eq!(bucket_seconds(at(1, 0), at(1, 0)), 10);
    }

    #[test]
    fn no_bucket_is_wider_than_its_range() {
        // From the shortest range the filters take (one minute) to a week.
        for minutes in [1, 2, 5, 10, 30, 59, 60, 61, 90, 120, 24 * 60, 7 * 24 * 60] {
            let to = at(1, 0) + TimeDelta::minutes(minutes);
            let size = bucket_seconds(at(1, 0), to);
            assert!(size <= minutes * 60, "{minutes} min: {size} s buckets");
            let bars = bars_for(minutes * 60, size);
            assert!((1..=MAX_BARS).contains(&bars), "{minutes} min: {bars} bars");
        }
        // A one-minute range: 10-second bars, labelled to the second.
        let minute = chart(at(1, 0), at(1, 0) + TimeDelta::minutes(1), 10, &[], Tz::UTC);
        assert_eq!((minute.bucket_amount, minute.bucket_unit), (10, "seconds"));
        assert_eq!(minute.x_labels[1].text, "00:00:20");
    }

    #[test]
    fn the_title_names_one_bucket_in_the_singular() {
        assert_eq!(bucket_span(10), (10, "seconds"));
        assert_eq!(bucket_span(60), (1, "minute"));
        assert_eq!(bucket_span(300), (5, "minutes"));
        assert_eq!(bucket_span(3600), (1, "hour"));
        assert_eq!(bucket_span(3 * 3600), (3, "hours"));
        assert_eq!(bucket_span(86_400), (1, "day"));
        assert_eq!(bucket_span(7 * 86_400), (7, "days"));
    }

    #[test]
    fn the_y_axis_ends_at_a_round_number() {
        for (value, ceiling) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 5),
            (7, 10),
            (11, 20),
            (48, 50),
            (501, 1000),
        ] {
            assert_eq!(nice_ceiling(value), ceiling, "{value}");
        }
    }

    #[test]
    fn bars_stack_failures_on_successes() {
        let counts = [
            BucketCounts {
                bucket: 0,
                succeeded: 6,
                failed: 4,
            },
            BucketCounts {
                bucket: 23,
                succeeded: 0,
                failed: 5,
            },
            // Outside the range (a clock edge): not drawn.
            BucketCounts {
                bucket: 24,
                succeeded: 1,
                failed: 0,
            },
        ];
        let chart = chart(at(1, 0), at(2, 0), 3600, &counts, Tz::UTC);
        assert_eq!(chart.bars.len(), 2);
        assert_eq!((chart.succeeded, chart.failed), (7, 9));
        assert_eq!((chart.bucket_amount, chart.bucket_unit), (1, "hour"));
        // Plot height 200 for a top of 10: 6 successes are 120 high, 4 failures 80 above them.
        let first = &chart.bars[0];
        assert_eq!(first.label, "2026-11-01 00:00 UTC");
        assert_eq!(
            (first.ok_y.as_str(), first.ok_height.as_str()),
            ("92.0", "120.0")
        );
        assert_eq!(
            (first.failed_y.as_str(), first.failed_height.as_str()),
            ("12.0", "80.0")
        );
        assert_eq!(first.x, "50.8");
        let last = &chart.bars[1];
        assert_eq!(last.label, "2026-11-01 23:00 UTC");
        assert_eq!(last.ok_height, "0.0");
        let y: Vec<&str> = chart
            .y_labels
            .iter()
            .map(|label| label.text.as_str())
            .collect();
        assert_eq!(y, ["0", "5", "10"]);
        let x: Vec<&str> = chart
            .x_labels
            .iter()
            .map(|label| label.text.as_str())
            .collect();
        assert_eq!(
            x,
            ["11-01 00:00", "11-01 08:00", "11-01 16:00", "11-02 00:00"]
        );
    }

    #[test]
    fn an_empty_range_draws_axes_only() {
        let chart = chart(at(1, 0), at(8, 0), 86_400, &[], Tz::UTC);
        assert!(chart.bars.is_empty());
        assert_eq!((chart.bucket_amount, chart.bucket_unit), (1, "day"));
        assert_eq!(chart.x_labels[0].text, "2026-11-01");
        assert_eq!((chart.succeeded, chart.failed), (0, 0));
    }

    #[test]
    fn times_are_labelled_in_the_users_zone() {
        let counts = [BucketCounts {
            bucket: 0,
            succeeded: 1,
            failed: 0,
        }];
        let chart = chart(at(1, 0), at(2, 0), 3600, &counts, Tz::Europe__Berlin);
        assert_eq!(chart.bars[0].label, "2026-11-01 01:00 CET");
        let x: Vec<&str> = chart
            .x_labels
            .iter()
            .map(|label| label.text.as_str())
            .collect();
        assert_eq!(
            x,
            ["11-01 01:00", "11-01 09:00", "11-01 17:00", "11-02 01:00"]
        );
    }
}
