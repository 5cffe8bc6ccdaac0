#!/usr/bin/env bash
# Benchmarks Authenticator::verify (DANE-EE, DANE-TA at depth 1 and 2) against rustls-webpki
# validating the same chain, and prints each case's mean and its ratio to webpki.
#
#   bash scripts/bench.sh                       # about a minute
#   bash scripts/bench.sh --measurement-time 10 # longer, steadier numbers
#
# Extra arguments go to criterion (e.g. a filter such as `dane-ta`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cargo bench -p danemta-dane --bench verify -- "$@"
