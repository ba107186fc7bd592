#!/usr/bin/env bash
# Runs fp-bench and, when a phase starts, records a system-wide `perf` profile of it (every
# process on the machine, call graphs), then writes the reports issue 17 quotes.
#
#   bench/tools/profile-phase.sh <out.txt> "<phase name prefix>" <bin dir> -- <fp-bench flags>
#
# e.g. bench/tools/profile-phase.sh bench/profiles/submissions-after.txt "submissions: max rate" \
#        target/release -- --events 10000 --submissions 40000 ...
# The profile starts 2 s into the phase and lasts PROFILE_SECONDS (default 8); the binaries whose
# top symbols are listed are PROFILE_DSOS (default "fp-api postgres"; one perf cannot resolve, such
# as RabbitMQ's JIT-compiled beam.smp, lists nothing). PROFILE_PROCESSES (e.g. "beam.smp
# postgres") lists the top symbols of every process of each name (its `comm`, at most 15
# characters, as the profile starts), whatever binary they are in: RabbitMQ's JIT-compiled Erlang
# functions resolve when the node runs with `+JPperf true` (it then writes /tmp/perf-<pid>.map).
# Context switches over the same window are written beside the report (<out without .txt>.switches,
# bench/tools/context_switches.py with a rate of 1, so its "per item" figures are per second).
set -euo pipefail

out=$1 phase=$2 bin_dir=$3
shift 3
[[ ${1:-} == "--" ]] && shift
seconds=${PROFILE_SECONDS:-8}
driver=${FP_BENCH_DRIVER:-${CARGO_TARGET_DIR:-target}/release/fp-bench}
work=$(mktemp -d)
"$driver" --profile release --bin-dir "$bin_dir" --results-dir "$work" "$@" 2> "$work/stderr.txt" > "$work/stdout.txt" &
driver_pid=$!
until grep -q "fp-bench: $phase" "$work/stderr.txt"; do
    kill -0 "$driver_pid" 2>/dev/null || { echo "fp-bench ended before '$phase'"; cat "$work/stderr.txt"; exit 1; }
    sleep 0.2
done
sleep 2
# The services end with the run: their pids are taken while they live.
declare -A pids
for process in ${PROFILE_PROCESSES:-}; do
    pids[$process]=$(pgrep -d, -x "$process" || true)
    [[ -n ${pids[$process]} ]] || echo "profile-phase: no process named $process" >&2
done
python3 "$(dirname "$0")/context_switches.py" "$seconds" 1 > "${out%.txt}.switches" &
switches_pid=$!
perf record -F 999 -g -a -o "$work/perf.data" -- sleep "$seconds" 2> /dev/null
wait "$switches_pid" || echo "profile-phase: context switches not recorded" >&2
wait "$driver_pid"
report() {
    local title=$1
    shift
    echo
    echo "# $title: perf report --no-children -g none $*"
    perf report -i "$work/perf.data" --no-children -g none --stdio "$@" 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -25 | cut -c1-120 || true
}
{
    echo "# perf record -F 999 -g -a -- sleep $seconds, 2 s into '$phase' (release build, $bin_dir), fp-bench $*"
    echo "# results: $(dirname "$out")/$(basename "$(ls "$work"/*.json 2>/dev/null | head -1)")"
    report "by binary (the kernel's share is every process's)" --sort dso
    report "by thread name" --sort comm
    for dso in ${PROFILE_DSOS:-fp-api postgres}; do
        report "$dso's own code, top symbols (shares of all samples)" --dsos "$dso" --sort sym
    done
    for process in ${PROFILE_PROCESSES:-}; do
        [[ -n ${pids[$process]} ]] || continue
        report "$process (pids ${pids[$process]}), top symbols in any binary (shares of all samples)" --pid "${pids[$process]}" --sort dso,sym
    done
} > "$out"
cp "$work"/*.json "$(dirname "$out")/" 2>/dev/null || true
echo "profile: $out (run dir $work)"
