#!/usr/bin/env bash
# The timing loop of bench/README.md, "The plan over 34 partitions": against a scratch database
# made with `fpctl migrate` and `fpctl maintenance run` (FP__RETENTION__DAYS_AHEAD=33 for 34
# partitions, the default for 4), executes the outcome statement 200 times on its generic plan,
# each after an UPDATE that makes the rows pending again, all in one transaction rolled back
# (the set-up's rows too), and prints the statement's mean time over the last 195 (psql's round
# trip included) and how many rows its last execution updated (20, or it timed nothing).
#
# With `--partition`, the statement updates the partition that holds the rows, named directly,
# instead of `delivery_attempts` ("the outcome statement naming its day's partition").
#
#   bench/profiles/outcome-update-timing.sh postgres://postgres@127.0.0.1:5432/<scratch database> \
#     [--partition]
set -euo pipefail
url=$1
named=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
statement=outcome
{
    echo "BEGIN;"
    echo "\\i $here/outcome-update-setup.sql"
    if [[ $named == --partition ]]; then
        statement=outcome_in_partition
        echo "SELECT DISTINCT tableoid::regclass::text AS partition FROM delivery_attempts \\gset"
        echo "PREPARE $statement(uuid[], timestamptz[], uuid[], bytea[], text) AS"
        echo "UPDATE :partition AS stored SET (response_status, error_kind, error_message, final, ingested_at) = (200, NULL, NULL, true, now())"
        echo "FROM unnest(\$1, \$2, \$3, \$4) AS outcome (id, attempted_at, event_id, request_body)"
        echo "WHERE stored.id = outcome.id AND stored.attempted_at = outcome.attempted_at"
        echo "  AND NOT EXISTS (SELECT 1 FROM erased_events WHERE erased_events.event_id = outcome.event_id)"
        echo "  AND stored.request_body = outcome.request_body AND stored.error_kind = \$5"
        echo "RETURNING stored.id;"
    fi
    echo "SET LOCAL plan_cache_mode = force_generic_plan;"
    echo "\\timing on"
    for _ in $(seq 200); do
        echo "EXECUTE $statement(:'ids', :'ats', :'evs', :'bodies', 'interrupted');"
        echo "UPDATE delivery_attempts SET error_kind = 'interrupted';"
    done
    echo "\\timing off"
    echo "EXECUTE $statement(:'ids', :'ats', :'evs', :'bodies', 'interrupted');"
    echo "ROLLBACK;"
} | psql "$url" -X 2>&1 | awk '
    /^Time:/ { if (t % 2 == 0 && t >= 10) { sum += $2; n++ } t++ }
    /^\([0-9]+ rows?\)$/ { rows = substr($1, 2) }
    END { printf "outcome statement: mean %.3f ms over %d; its last execution updated %d rows\n", sum / n, n, rows }'
