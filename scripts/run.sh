#!/usr/bin/env bash
# Builds danemta (release) and runs it. With arguments, runs `danemta ARGS…`. Without, runs
# today's main job: a DANE check of the example server chain in examples/ (print the TLSA
# records to publish for it, then verify the chain against them, as a sending MTA would).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
cargo build --release --locked -p danemta
bin=target/release/danemta
if (($#)); then
    exec "$bin" "$@"
fi
chain=examples/mx.example.test.chain.pem
echo "== TLSA records for $chain"
"$bin" tlsa generate --cert "$chain" --name mx.example.test
"$bin" tlsa generate --cert "$chain" --name mx.example.test --usage 2 2>/dev/null
echo "== DANE-EE check"
"$bin" tlsa verify --chain "$chain" --name mx.example.test \
    --tlsa "$("$bin" tlsa generate --cert "$chain" 2>/dev/null)"
echo "== DANE-TA check"
exec "$bin" tlsa verify --chain "$chain" --name mx.example.test \
    --tlsa "$("$bin" tlsa generate --cert "$chain" --usage 2 2>/dev/null)"
