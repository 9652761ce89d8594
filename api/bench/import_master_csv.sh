#!/usr/bin/env bash
# Issue 17's target: 1,000,000 Asterisk Master.csv rows import as fast as the same calls in
# tollbook's own CSV. Sets up the ledger of api/bench/import.sh (BOOKS partners with
# CUSTOMERS customers each, tariffs of PREFIXES prefixes) and gives each customer an
# account code, stops the server, writes the same CDRS calls twice — tollbook's CSV
# exactly as import.sh writes it, and Master.csv as Asterisk's cdr_csv writes it with
# `usegmtime=yes` and `loguniqueid=yes` (uniqueid = the tollbook id, accountcode for the
# account) — then times `tollbook import cdrs` on each, each into its own copy of the
# data directory, the same way import.sh does (the import waits for the read models to
# catch up before it ends).
#
#   api/bench/import_master_csv.sh
#   CDRS=10000 BIN=target/debug/tollbook api/bench/import_master_csv.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CDRS=${CDRS:-1000000}
ACCOUNT_CODES=1
source api/bench/ledger.sh
stop_server
cp -r "$data" "$work/data-asterisk"
python3 - "$work/cdrs.csv" "$work/Master.csv" <<PY
import datetime, sys
books, customers, count, prefixes = $BOOKS, $CUSTOMERS, $CDRS, $PREFIXES
t0 = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
# Master.csv times with usegmtime=yes: UTC, as "%Y-%m-%d %H:%M:%S".
ast = lambda t: t.strftime("%Y-%m-%d %H:%M:%S")
with open(sys.argv[1], "w") as f, open(sys.argv[2], "w") as m:
    f.write("id,account,caller,callee,start,answer,end,hangup_cause\n")
    for i in range(count):
        start = t0 + datetime.timedelta(seconds=i * 2)
        b, c = i % books, (i // books) % customers
        account = f"C{b}-{c}"
        callee = f"49{i % prefixes:04d}{i % 1000:03d}"
        # accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
        # start, answer, end, duration, billsec, disposition, amaflags, uniqueid, userfield
        head = f'"ac{b}-{c}","4940","{callee}","default","""Caller"" <4940>","SIP/trunk{b}-{i:08x}","SIP/out-{i:08x}","Dial","SIP/out/{callee},30"'
        if i % 5 == 0:
            end = start + datetime.timedelta(seconds=20)
            f.write(f"cdr-{i},{account},4940,{callee},{iso(start)},,{iso(end)},NO_ANSWER\n")
            m.write(f'{head},"{ast(start)}","","{ast(end)}",20,0,"NO ANSWER","DOCUMENTATION","cdr-{i}",""\n')
        else:
            answer = start + datetime.timedelta(seconds=3)
            end = start + datetime.timedelta(seconds=3 + i % 600)
            f.write(f"cdr-{i},{account},4940,{callee},{iso(start)},{iso(answer)},{iso(end)},16\n")
            m.write(f'{head},"{ast(start)}","{ast(answer)}","{ast(end)}",{3 + i % 600},{i % 600},"ANSWERED","DOCUMENTATION","cdr-{i}",""\n')
PY
echo "$CDRS CDRs: tollbook CSV $(du -h "$work/cdrs.csv" | cut -f1), Master.csv $(du -h "$work/Master.csv" | cut -f1); $BOOKS books x $CUSTOMERS customers, $PREFIXES prefixes"
echo "== tollbook's own CSV"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/cdrs.csv" --data "$data"
echo "== Asterisk Master.csv (--format asterisk-csv)"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/Master.csv" --format asterisk-csv --data "$work/data-asterisk"
echo "== rerun of Master.csv (everything already in)"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/Master.csv" --format asterisk-csv --data "$work/data-asterisk"
