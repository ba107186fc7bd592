#!/usr/bin/env bash
# The timing loop of bench/README.md, "The plan over 34 partitions": against a scratch database
# made with `fpctl migrate` and `fpctl maintenance run` (FP__RETENTION__DAYS_AHEAD=33 for 34
# partitions, the default for 4), executes the outcome statement 200 times on its generic plan,
# each after an UPDATE that makes the rows pending again, in one transaction rolled back, and
# prints the statement's mean time over the last 195 (psql's round trip included).
#
#   bench/profiles/outcome-update-timing.sh postgres://postgres@127.0.0.1:5432/<scratch database>
set -euo pipefail
url=$1
here=$(cd "$(dirname "$0")" && pwd)
{
    echo "\\i $here/outcome-update-setup.sql"
    echo "SET plan_cache_mode = force_generic_plan;"
    echo "BEGIN;"
    echo "\\timing on"
    for _ in $(seq 200); do
        echo "EXECUTE outcome(:'ids', :'ats', :'evs', :'bodies', 'interrupted');"
        echo "UPDATE delivery_attempts SET error_kind = 'interrupted';"
    done
    echo "\\timing off"
    echo "ROLLBACK;"
} | psql "$url" -X 2>&1 | grep '^Time:' | awk 'NR % 2 == 1 && NR > 10 { sum += $2; n++ } END { printf "outcome statement: mean %.3f ms over %d\n", sum / n, n }'
