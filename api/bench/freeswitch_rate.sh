#!/usr/bin/env bash
# Issue 17's target: a FreeSWITCH mod_json_cdr document posted is charged in < 5 ms p99 at
# 1,000 posts/s, at a constant rate. Starts the release server on a fresh data directory,
# sets up the ledger of api/bench/ledger.sh (BOOKS partners with CUSTOMERS customers, each
# customer rated by a tariff of PREFIXES prefixes and known to the switch by its account
# code), then offers RATE posts a second for SECONDS seconds over CONNECTIONS kept-alive
# connections, each a distinct call (its own uuid) of a customer in turn, and reports the
# latency percentiles measured from when each post was due (api/bench/freeswitch_load.py:
# oha's `-Z` repeats bodies, and a repeated uuid is a duplicate that writes nothing).
# Every post must be answered 201 (charged).
#
#   api/bench/freeswitch_rate.sh
#   RATE=2000 SECONDS_=10 api/bench/freeswitch_rate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${RATE:-1000} SECONDS_=${SECONDS_:-30} CONNECTIONS=${CONNECTIONS:-32}
ACCOUNT_CODES=1
source api/bench/ledger.sh
codes=$(for ((b = 0; b < BOOKS; b++)); do for ((c = 0; c < CUSTOMERS; c++)); do printf 'ac%d-%d,' $b $c; done; done)
echo "server $base ($bin): $BOOKS books x $CUSTOMERS customers, $PREFIXES prefixes;" \
  "$RATE mod_json_cdr posts/s for $SECONDS_ s over $CONNECTIONS connections"
python3 api/bench/freeswitch_load.py "$base/api/v1/cdrs/freeswitch" "$ADMIN_KEY" "$RATE" "$SECONDS_" "$CONNECTIONS" "${codes%,}"
