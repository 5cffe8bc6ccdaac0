#!/usr/bin/env bash
# Builds danemta (release) and runs it. Without arguments, runs the main job: the relay
# daemon `danemta serve` on its embedded defaults (listen on 127.0.0.1:2525, relay for
# loopback clients, spool in /var/spool/danemta as root or ~/.local/state/danemta, a
# self-signed STARTTLS certificate whose TLSA record it logs, metrics on 127.0.0.1:9325),
# or on /etc/danemta/danemta.toml when that exists. Stop it with Ctrl-C (SIGINT) or SIGTERM.
# With arguments, runs `danemta ARGS…` (e.g. `bash scripts/run.sh queue list`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
cargo build --release --locked -p danemta
bin=target/release/danemta
if (($#)); then
    exec "$bin" "$@"
fi
exec "$bin" serve
