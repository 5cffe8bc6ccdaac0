#!/usr/bin/env bash
# Benchmarks, each printing ratios or rates measured in the same run:
#   dane: Authenticator::verify (DANE-EE, DANE-TA at depth 1 and 2) against rustls-webpki
#         validating the same chain (criterion; mean and ratio per case);
#   dns:  route discovery of every DNSSEC-lab domain, cold and warm cache, for both resolver
#         back-ends (routes/s, DNS queries per route);
#   check: `danemta check --from-file` against Postfix's posttls-finger (xargs -P) on the same
#         lab domains at the same concurrency (domains/s, ratio, danemta's peak memory).
#   relay: `danemta serve` against Postfix 3.7 at smtp_tls_security_level = dane, in its
#         defaults and tuned (TLS connection reuse via tlsproxy, TLS session cache), the same
#         messages submitted over SMTP and delivered DANE-verified to a lab Postfix receiver
#         (discard transport) for each case of sizes x destinations: accepted and delivered
#         msgs/s, p50/p99 latency 250-after-DATA -> receipt, peak RSS, CPU s per 1,000 messages,
#         ratios danemta / Postfix(best). Environment: RELAY_BENCH_MESSAGES (default 2000; a
#         quarter of it for messages over 16 KiB), RELAY_BENCH_SIZES (default 2k,100k),
#         RELAY_BENCH_DESTINATIONS (default 20,1; at most 20), RELAY_BENCH_RECEIVER=maildir
#         (store instead of discard), RELAY_BENCH_KEEP=1 (keep the relays' directories).
#         RELAY_BENCH_SESSIONS (client sessions at once, default 32).
#   relay --store postgres: the cost of the shared PostgreSQL queue (issue 14): the same cases,
#         phases, load and table, comparing danemta on its local store (the baseline, same run)
#         with 1, 2 and 3 `danemta serve` nodes sharing one database of a lab PostgreSQL server
#         (fsync on; started once per run, a fresh database per system and case); the client
#         spreads its sessions over the nodes round-robin; RSS, PSS and CPU sum over the nodes,
#         the server's own CPU, memory, commits and WAL per message are printed apart; ratios
#         against the local store; no Postfix relay. Sets RELAY_BENCH_STORE=postgres for the
#         bench; RELAY_BENCH_NODES (default 1,2,3, each at most 8) and every RELAY_BENCH_*
#         above apply. Needs the Debian package postgresql too.
#   soak: the crash soak of the test suite (crates/danemta/tests/serve_crash.rs) made long:
#         SOAK_KILLS kill -9 cycles (default 100, about 2 s each) under continuous submission,
#         release build; prints acknowledged, lost (must be 0), duplicates, bounces.
#   dns, check, relay and soak need root and nsd, unbound, ldnsutils, postfix (scripts/test.sh installs them).
#
#   bash scripts/bench.sh            # both
#   bash scripts/bench.sh dane [criterion args…]
#   bash scripts/bench.sh dns
#   bash scripts/bench.sh check
#   RELAY_BENCH_MESSAGES=500 bash scripts/bench.sh relay
#   RELAY_BENCH_SIZES=2k RELAY_BENCH_DESTINATIONS=1 bash scripts/bench.sh relay
#   RELAY_BENCH_MESSAGES=300 RELAY_BENCH_SIZES=2k RELAY_BENCH_DESTINATIONS=20 \
#       bash scripts/bench.sh relay --store postgres
#   SOAK_KILLS=300 bash scripts/bench.sh soak
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

what="${1:-all}"
[ $# -gt 0 ] && shift
case "$what" in
    dane) cargo bench -p danemta-dane --bench verify -- "$@" ;;
    dns) cargo bench -p danemta-dns --bench routes ;;
    check) cargo bench -p danemta --bench check_vs_posttls ;;
    relay)
        while [ $# -gt 0 ]; do
            case "$1" in
                --store) [ $# -ge 2 ] || { echo "relay: --store needs local or postgres" >&2; exit 64; }
                    export RELAY_BENCH_STORE="$2"; shift 2 ;;
                --store=*) export RELAY_BENCH_STORE="${1#--store=}"; shift ;;
                *) echo "relay: unknown argument $1 (want --store postgres)" >&2; exit 64 ;;
            esac
        done
        case "${RELAY_BENCH_STORE:-local}" in
            local|postgres) ;;
            *) echo "relay: --store $RELAY_BENCH_STORE: want local or postgres" >&2; exit 64 ;;
        esac
        cargo bench -p danemta --bench relay_vs_postfix ;;
    soak)
        SERVE_CRASH_KILLS="${SOAK_KILLS:-100}" cargo test --release -p danemta --test serve_crash \
            -- --nocapture 2>&1 | grep -E '^(serve_crash: (seed|totals)|  [a-z])|test result|panicked' ;;
    all)
        cargo bench -p danemta-dane --bench verify
        cargo bench -p danemta-dns --bench routes
        cargo bench -p danemta --bench check_vs_posttls
        cargo bench -p danemta --bench relay_vs_postfix
        ;;
    *) echo "usage: bash scripts/bench.sh [dane [criterion args…]|dns|check|relay [--store postgres]|soak]" >&2; exit 64 ;;
esac
