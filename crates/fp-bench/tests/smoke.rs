//! `make test` runs the bench harness at a tiny load so it never rots: the real services (the debug
//! build `make test` made), the bench receiver, a fresh database and namespace. It checks only that
//! the driver succeeds, i.e. that every event arrived and was logged; no timing is asserted.

use std::process::Command;

/// The events scenario alone: no submissions, backlog, scale-out or limits.
const EVENTS_ONLY: &[&str] = &[
    "--submissions",
    "0",
    "--backlog-events",
    "0",
    "--scale-out-dispatchers",
    "0",
    "--skip-limits",
];

/// Runs `fp-bench --smoke --profile debug --timeout-secs 120` with `more` arguments; its stdout
/// once it succeeded.
fn smoke_run(more: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fp-bench"))
        .args(["--smoke", "--profile", "debug", "--timeout-secs", "120"])
        .args(more)
        .output()
        .expect("fp-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fp-bench --smoke {more:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[test]
fn the_bench_harness_delivers_and_logs_every_event_at_a_tiny_load() {
    let stdout = smoke_run(&[]);
    // Events 200 + 100 + 50 paced, submissions 100 + 50 + 25 paced, scale-out 200, backlog 300.
    assert!(
        stdout.contains("database: 1025 rows, 1025 distinct deliveries, 1025 answered 200"),
        "{stdout}"
    );
}

/// Paced phases at given rates (for A B comparisons at one load): named by their rate, and every
/// event of them arrives and is logged. With `--latencies-dir`, each phase's arrivals are written
/// there, one line per delivery.
#[test]
fn paced_phases_run_at_the_rates_given() {
    let latencies = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smoke-latencies");
    let _ = std::fs::remove_dir_all(&latencies);
    let latencies_arg = latencies.to_string_lossy().into_owned();
    let stdout = smoke_run(
        &[
            EVENTS_ONLY,
            &["--paced-rates", "40,20", "--latencies-dir", &latencies_arg],
        ]
        .concat(),
    );
    for (phase, file) in [
        ("events: paced at 40/s", "events--paced-at-40-s.csv"),
        ("events: paced at 20/s", "events--paced-at-20-s.csv"),
    ] {
        assert!(stdout.contains(phase), "no phase `{phase}`:\n{stdout}");
        // "== events: paced at 40/s (50 events, paced at 40/s) =="
        let events: usize = stdout
            .split(&format!("== {phase} ("))
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no event count for `{phase}`:\n{stdout}"));
        let csv = std::fs::read_to_string(latencies.join(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("occurred_ns,latency_ns"));
        let rows: Vec<(u64, u64)> = lines
            .map(|line| {
                let (occurred, latency) = line.split_once(',').expect("two columns");
                (
                    occurred.parse().expect("occurred_ns"),
                    latency.parse().expect("latency_ns"),
                )
            })
            .collect();
        assert_eq!(rows.len(), events, "{file}");
        assert!(
            rows.is_sorted(),
            "{file} is in the order the events were made"
        );
        assert!(rows.iter().all(|(_, latency)| *latency > 0), "{file}");
    }
    assert!(!stdout.contains("% of max rate"), "{stdout}");
}

#[test]
fn a_paced_rate_that_is_not_positive_is_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_fp-bench"))
        .args(["--smoke", "--profile", "debug", "--paced-rates", "100,0"])
        .output()
        .expect("fp-bench starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--paced-rates and --paced-shares must be positive numbers, not 0"),
        "{stderr}"
    );
}

/// The lifecycle phase (issue 15) at a tiny size: 3,000 attempts seeded over 30 days, then the
/// events load without and with maintenance twice. Each maintained run drops the three oldest days
/// left (retention 27 days, then 24) and erases one submission through the api; the final check
/// (every pipeline row present, the seeded ones gone) must pass.
#[test]
fn the_lifecycle_phase_drops_partitions_and_erases_under_load_at_a_tiny_size() {
    let stdout = smoke_run(&[EVENTS_ONLY, &["--lifecycle", "--skip-paced"]].concat());
    assert!(
        stdout.contains("seeded 3000 attempts over 30 days"),
        "{stdout}"
    );
    // Three days past the retention each time; four when the run crossed midnight (UTC) between
    // seeding and the drop.
    for run in ["run 1", "run 2"] {
        assert!(
            (3..=4).contains(&step_count(&stdout, run, "partition_drop")),
            "{stdout}"
        );
        assert!(step_count(&stdout, run, "erasure") >= 1, "{stdout}");
    }
}

/// The count of a maintenance step's line in the lifecycle table (`run 1 partition_drop  3 ...`).
fn step_count(stdout: &str, run: &str, step: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.trim_start().strip_prefix(run)?.trim_start();
            let rest = rest.strip_prefix(step)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `{run} {step}` line with a count:\n{stdout}"))
}
