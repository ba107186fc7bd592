//! `make test` runs the bench harness at a tiny load so it never rots: the real services (the debug
//! build `make test` made), the bench receiver, a fresh database and namespace. It checks that the
//! driver succeeds (every event arrived and was logged) and what it writes; no timing is asserted.

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
    // The report says under which writeback settings of the kernel it was made.
    assert!(
        stdout.contains("kernel writeback: vm.dirty_background_bytes="),
        "{stdout}"
    );
    // The limits ran (200 operations, `--events`); each paced one, half of them, has a latency
    // for every operation on the line after its own.
    for paced in ["rabbitmq one hop at ", "postgresql commit at "] {
        let latency = stdout
            .lines()
            .skip_while(|line| !line.trim_start().starts_with(paced))
            .nth(1)
            .unwrap_or_else(|| panic!("no limit `{paced}`:\n{stdout}"));
        assert!(
            latency.trim_start().starts_with("latency ms") && latency.ends_with("(n=100)"),
            "`{paced}`: {latency}\n{stdout}"
        );
    }
}

/// Paced phases at given rates (for A B comparisons at one load): named by their rate, and every
/// event of them arrives and is logged.
#[test]
fn paced_phases_run_at_the_rates_given() {
    let stdout = smoke_run(&[EVENTS_ONLY, &["--paced-rates", "40,20"]].concat());
    for phase in ["events: paced at 40/s", "events: paced at 20/s"] {
        assert!(stdout.contains(phase), "no phase `{phase}`:\n{stdout}");
    }
    assert!(!stdout.contains("% of max rate"), "{stdout}");
}

/// `--latencies-dir`: a CSV per phase, named after it, with a line per delivery of the phase in
/// the order the events were made, whose largest latency is the phase's `max`.
#[test]
fn each_phase_s_arrivals_are_written_where_asked() {
    let dir = fresh_dir("smoke-latencies");
    let stdout = smoke_run(
        &[
            EVENTS_ONLY,
            &[
                "--paced-rates",
                "40",
                "--latencies-dir",
                &dir.to_string_lossy(),
            ],
        ]
        .concat(),
    );
    let files = arrival_files(&dir);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "events-max-rate-1-dispatcher-s.csv",
            "events-paced-at-40-s.csv"
        ]
    );
    for ((file, rows), phase) in files
        .iter()
        .zip(["events: max rate, 1 dispatcher(s)", "events: paced at 40/s"])
    {
        // "== events: paced at 40/s (50 events, paced at 40/s) ==", then its latency line,
        // "  e2e latency ms  p50 ... max  12.34  (n=50)".
        let section = stdout
            .split(&format!("== {phase} ("))
            .nth(1)
            .unwrap_or_else(|| panic!("no phase `{phase}`:\n{stdout}"));
        let events: usize = section
            .split(' ')
            .next()
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no event count for `{phase}`:\n{stdout}"));
        let max_ms: f64 = section
            .split(" max ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|max| max.parse().ok())
            .unwrap_or_else(|| panic!("no max latency for `{phase}`:\n{stdout}"));
        assert_eq!(rows.len(), events, "{file}");
        assert!(
            rows.is_sorted(),
            "{file} is in the order the events were made"
        );
        let largest_ms = rows.iter().map(|(_, latency)| *latency).max().unwrap_or(0) as f64 / 1e6;
        assert!(
            (largest_ms - max_ms).abs() < 0.01,
            "{file}: {largest_ms} ms, the phase's max {max_ms} ms"
        );
    }
}

#[test]
fn a_latencies_dir_with_an_earlier_run_s_files_is_refused_before_anything_starts() {
    let dir = fresh_dir("smoke-latencies-taken");
    std::fs::create_dir_all(&dir).expect("the directory");
    std::fs::write(
        dir.join("events-paced-at-40-s.csv"),
        "occurred_ns,latency_ns\n",
    )
    .expect("an earlier run's file");
    let output = Command::new(env!("CARGO_BIN_EXE_fp-bench"))
        .args(["--smoke", "--profile", "debug", "--latencies-dir"])
        .arg(&dir)
        .output()
        .expect("fp-bench starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("already holds CSV files"), "{stderr}");
    assert!(
        !stderr.contains("deployment"),
        "it started a deployment:\n{stderr}"
    );
}

/// A fresh directory under Cargo's temporary directory for tests.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every CSV of a `--latencies-dir`, by file name: its (occurred_ns, latency_ns) rows.
fn arrival_files(dir: &std::path::Path) -> Vec<(String, Vec<(u64, u64)>)> {
    let mut files: Vec<(String, Vec<(u64, u64)>)> = std::fs::read_dir(dir)
        .expect("the latencies directory exists")
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let csv = std::fs::read_to_string(&path).expect("a readable CSV");
            let mut lines = csv.lines();
            assert_eq!(
                lines.next(),
                Some("occurred_ns,latency_ns"),
                "{}",
                path.display()
            );
            let rows = lines
                .map(|line| {
                    let (occurred, latency) = line.split_once(',').expect("two columns");
                    (
                        occurred.parse().expect("occurred_ns"),
                        latency.parse().expect("latency_ns"),
                    )
                })
                .collect();
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, rows)
        })
        .collect();
    files.sort();
    files
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
    // With `--latencies-dir`: the lifecycle's phases are renamed after they ran, and each still
    // gets a file of its own.
    let dir = fresh_dir("smoke-lifecycle-latencies");
    let stdout = smoke_run(
        &[
            EVENTS_ONLY,
            &[
                "--lifecycle",
                "--skip-paced",
                "--latencies-dir",
                &dir.to_string_lossy(),
            ],
        ]
        .concat(),
    );
    assert!(
        stdout.contains("seeded 3000 attempts over 30 days"),
        "{stdout}"
    );
    let files = arrival_files(&dir);
    let lifecycle = files
        .iter()
        .filter(|(name, rows)| name.starts_with("lifecycle-") && !rows.is_empty())
        .count();
    assert_eq!((files.len(), lifecycle), (5, 4), "{files:?}");
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
