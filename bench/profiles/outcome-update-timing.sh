#!/usr/bin/env bash
# The timing loop of bench/README.md, "The plan over 34 partitions": against a scratch database
# made with `fpctl migrate` and `fpctl maintenance run` (FP__RETENTION__DAYS_AHEAD=33 for 34
# partitions, the default for 4), executes the outcome statement 200 times on its generic plan,
# each after an UPDATE that makes the rows pending again, in one transaction rolled back, and
# prints the statement's mean time over the last 195 (psql's round trip included).
#
# With a second argument, the statement updates that table instead of `delivery_attempts`: a day
# partition named directly ("the outcome statement naming its day's partition"). The set-up adds
# 20 rows and a tenant each run; delete them (`DELETE FROM delivery_attempts; DELETE FROM
# tenants`) before the next.
#
#   bench/profiles/outcome-update-timing.sh postgres://postgres@127.0.0.1:5432/<scratch database> \
#     [delivery_attempts_p<today, YYYYMMDD>]
set -euo pipefail
url=$1
table=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
statement=outcome
{
    echo "\\i $here/outcome-update-setup.sql"
    if [[ -n $table ]]; then
        statement=outcome_in_partition
        echo "PREPARE $statement(uuid[], timestamptz[], uuid[], bytea[], text) AS"
        echo "UPDATE $table AS stored SET (response_status, error_kind, error_message, final, ingested_at) = (200, NULL, NULL, true, now())"
        echo "FROM unnest(\$1, \$2, \$3, \$4) AS outcome (id, attempted_at, event_id, request_body)"
        echo "WHERE stored.id = outcome.id AND stored.attempted_at = outcome.attempted_at"
        echo "  AND NOT EXISTS (SELECT 1 FROM erased_events WHERE erased_events.event_id = outcome.event_id)"
        echo "  AND stored.request_body = outcome.request_body AND stored.error_kind = \$5"
        echo "RETURNING stored.id;"
    fi
    echo "SET plan_cache_mode = force_generic_plan;"
    echo "BEGIN;"
    echo "\\timing on"
    for _ in $(seq 200); do
        echo "EXECUTE $statement(:'ids', :'ats', :'evs', :'bodies', 'interrupted');"
        echo "UPDATE delivery_attempts SET error_kind = 'interrupted';"
    done
    echo "\\timing off"
    echo "ROLLBACK;"
} | psql "$url" -X 2>&1 | grep '^Time:' | awk 'NR % 2 == 1 && NR > 10 { sum += $2; n++ } END { printf "outcome statement: mean %.3f ms over %d\n", sum / n, n }'
