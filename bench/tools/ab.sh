#!/usr/bin/env bash
# Runs fp-bench on two or more variants in turn, A B B A (issue 17's rule: a change counts only
# when its effect is larger than the spread of the same variant), on a quiet machine.
#
#   bench/tools/ab.sh <label> <rounds> <name>=<bin dir>[,VAR=value...] ... -- <fp-bench flags>
#
# A variant is a build (its bin dir) and, optionally, environment the services inherit from the
# driver, e.g. `G1=target/release,FP__API__SUBMISSION_BATCH_MAX=1` (the same build without group
# commit). One driver (FP_BENCH_DRIVER, default target/release/fp-bench) runs every variant, so only
# the services differ. Each run's JSON goes to bench/results/experiments/<label>/<name>-<round>/;
# then bench/tools/summarize.py prints the tables.
set -euo pipefail

label=$1 rounds=$2
shift 2
variants=()
while [[ $# -gt 0 && $1 != "--" ]]; do
    variants+=("$1")
    shift
done
[[ ${1:-} == "--" ]] && shift

driver=${FP_BENCH_DRIVER:-${CARGO_TARGET_DIR:-target}/release/fp-bench}
out=bench/results/experiments/$label
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    # Every other round runs the variants in reverse (A B, B A, ...), so a drift of the machine
    # during the sitting does not favour whichever variant runs second.
    order=("${variants[@]}")
    if (( round % 2 == 0 )); then
        order=()
        for (( i = ${#variants[@]} - 1; i >= 0; i-- )); do order+=("${variants[i]}"); done
    fi
    for variant in "${order[@]}"; do
        name=${variant%%=*}
        IFS=, read -r -a parts <<< "${variant#*=}"
        bin_dir=${parts[0]}
        dir=$out/$name-$round
        mkdir -p "$dir"
        echo "== $label: $name round $round (${parts[*]})"
        # Each line timestamped, so the phases can be matched with other logs (pg_background.py).
        env "${parts[@]:1}" "$driver" --profile release --bin-dir "$bin_dir" --results-dir "$dir" "$@" 2>&1 \
            | python3 -u bench/tools/stamp.py > "$dir/stdout.txt" || { echo "run failed: see $dir/stdout.txt"; exit 1; }
    done
done
python3 bench/tools/summarize.py "$out" | tee "$out/summary.md"
