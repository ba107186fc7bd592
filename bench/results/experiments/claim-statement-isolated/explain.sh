#!/bin/bash
# Executes the claim statement of PREPARE (a prepared statement, as the dispatcher sends it) on
# <reps> fresh batches of <n> deliveries, each under EXPLAIN (ANALYZE, TIMING OFF), and prints
# the plans; `grep "Execution Time"` gives the times. PostgreSQL is told to use the generic plan,
# which is what a connection settles on after its fifth execution.
#
#   PREPARE=prepare-N.sql DATABASE_URL=postgres://postgres@127.0.0.1/scratch_claims \
#       ./explain.sh <n> <reps>
#
# The database: a scratch one with every migration's up.sql applied in order, 1,000 tenants and
# today's day partition of delivery_attempts (see README.md beside this script).
set -euo pipefail
cd "$(dirname "$0")"
n=$1 reps=$2
{
    cat "${PREPARE:?}"
    echo "SET plan_cache_mode = force_generic_plan;"
    echo "\\set n $n"
    for _ in $(seq 1 "$reps"); do
        echo "\\i gen.sql"
        echo "EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE claim(now(), :'d', :'s', :'id', :'d', :'e', :'t', :'et', :'url', :'an', :'at', :'dur', :'rh', :'rb', :'rs', :'rsh', :'rsb', :'tr', :'ek', :'em', :'fin', :'nr', :'man', :'tp', :'ts');"
    done
} | psql -w -q "${DATABASE_URL:?}"
