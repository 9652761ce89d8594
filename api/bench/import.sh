#!/usr/bin/env bash
# End-to-end CSV import of CDRS CDRs (default 1,000,000) with the release binary: parse,
# rate with tariffs of PREFIXES prefixes (retail per partner, wholesale from the
# operator), append durably, project. Sets up BOOKS partners with CUSTOMERS customers
# each through the API, stops the server, generates the file, then times
# `tollbook import cdrs` (which waits for the read models to catch up before it ends).
#
#   api/bench/import.sh
#   CDRS=200000 BOOKS=4 api/bench/import.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CDRS=${CDRS:-1000000}
source api/bench/ledger.sh
stop_server
python3 - "$work/cdrs.csv" <<PY
import datetime, sys
books, customers, count, prefixes = $BOOKS, $CUSTOMERS, $CDRS, $PREFIXES
t0 = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
with open(sys.argv[1], "w") as f:
    f.write("id,account,caller,callee,start,answer,end,hangup_cause\n")
    for i in range(count):
        start = t0 + datetime.timedelta(seconds=i * 2)
        s = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        account = f"C{i % books}-{(i // books) % customers}"
        if i % 5 == 0:
            end = (start + datetime.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"cdr-{i},{account},4940,49{i % prefixes:04d}{i % 1000:03d},{s},,{end},NO_ANSWER\n")
        else:
            answer = (start + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
            end = (start + datetime.timedelta(seconds=3 + i % 600)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"cdr-{i},{account},4940,49{i % prefixes:04d}{i % 1000:03d},{s},{answer},{end},16\n")
PY
[ -n "${KEEP:-}" ] && cp -r "$data" "$KEEP/data" && cp "$work/cdrs.csv" "$KEEP/cdrs.csv"
echo "$CDRS CDRs ($(du -h "$work/cdrs.csv" | cut -f1)), $BOOKS books x $CUSTOMERS customers, $PREFIXES prefixes"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/cdrs.csv" --data "$data"
echo "== rerun (everything already in)"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/cdrs.csv" --data "$data"
