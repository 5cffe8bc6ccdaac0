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
    relay) cargo bench -p danemta --bench relay_vs_postfix ;;
    soak)
        SERVE_CRASH_KILLS="${SOAK_KILLS:-100}" cargo test --release -p danemta --test serve_crash \
            -- --nocapture 2>&1 | grep -E '^(serve_crash: (seed|totals)|  [a-z])|test result|panicked' ;;
    all)
        cargo bench -p danemta-dane --bench verify
        cargo bench -p danemta-dns --bench routes
        cargo bench -p danemta --bench check_vs_posttls
        cargo bench -p danemta --bench relay_vs_postfix
        ;;
    *) echo "usage: bash scripts/bench.sh [dane|dns|check|relay|soak] [criterion args…]" >&2; exit 64 ;;
esac
