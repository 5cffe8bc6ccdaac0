#!/usr/bin/env bash
# Benchmarks, each printing ratios or rates measured in the same run:
#   dane: Authenticator::verify (DANE-EE, DANE-TA at depth 1 and 2) against rustls-webpki
#         validating the same chain (criterion; mean and ratio per case);
#   dns:  route discovery of every DNSSEC-lab domain, cold and warm cache, for both resolver
#         back-ends (routes/s, DNS queries per route);
#   check: `danemta check --from-file` against Postfix's posttls-finger (xargs -P) on the same
#         lab domains at the same concurrency (domains/s, ratio, danemta's peak memory).
#   dns and check need root and nsd, unbound, ldnsutils, postfix (scripts/test.sh installs them).
#
#   bash scripts/bench.sh            # both
#   bash scripts/bench.sh dane [criterion args…]
#   bash scripts/bench.sh dns
#   bash scripts/bench.sh check
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

what="${1:-all}"
[ $# -gt 0 ] && shift
case "$what" in
    dane) cargo bench -p danemta-dane --bench verify -- "$@" ;;
    dns) cargo bench -p danemta-dns --bench routes ;;
    check) cargo bench -p danemta --bench check_vs_posttls ;;
    all)
        cargo bench -p danemta-dane --bench verify
        cargo bench -p danemta-dns --bench routes
        cargo bench -p danemta --bench check_vs_posttls
        ;;
    *) echo "usage: bash scripts/bench.sh [dane|dns|check] [criterion args…]" >&2; exit 64 ;;
esac
