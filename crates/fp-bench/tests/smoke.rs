//! `make test` runs the bench harness at a tiny load so it never rots: the real services (the debug
//! build `make test` made), the bench receiver, a fresh database and namespace. It checks only that
//! the driver succeeds, i.e. that every event arrived and was logged; no timing is asserted.

use std::process::Command;

#[test]
fn the_bench_harness_delivers_and_logs_every_event_at_a_tiny_load() {
    let output = Command::new(env!("CARGO_BIN_EXE_fp-bench"))
        .args(["--smoke", "--profile", "debug", "--timeout-secs", "120"])
        .output()
        .expect("fp-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fp-bench --smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Events 200 + 100 + 50 paced, submissions 100 + 50 + 25 paced, scale-out 200, backlog 300.
    assert!(
        stdout.contains("database: 1025 rows, 1025 distinct deliveries, 1025 answered 200"),
        "{stdout}"
    );
}
