#!/usr/bin/env bash
# The library crates, as their users get them from crates.io: danemta-dane (crates/dane) and
# danemta-dns (crates/dns).
#
#   * `cargo package` of both, with verification: the packaged sources build on their own,
#     from the package's files only (danemta-dns against the packaged danemta-dane, through
#     cargo's local registry overlay for multi-package packaging, cargo >= 1.90). The
#     integration tests that need the unpublished lab are left out of the packages on purpose
#     (cargo warns "ignoring test …");
#   * `cargo doc` with every rustdoc warning an error (missing docs, broken intra-doc links);
#   * the doc tests, README.md code blocks included.
#
# Works from a clean clone; output lands in target/ (target/package for the packages).
# `--allow-dirty` so it also runs in a working copy with uncommitted edits: it checks that
# the crates package, not that the tree is committed (publishing itself must run clean).
#
#   bash scripts/check-library.sh
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(-p danemta-dane -p danemta-dns)

echo "==> cargo package ${crates[*]}"
cargo package "${crates[@]}" --locked --allow-dirty

echo "==> cargo doc (warnings are errors)"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --no-deps "${crates[@]}" --locked

echo "==> cargo test --doc"
cargo test --doc "${crates[@]}" --locked

echo "==> the library crates are ready to publish"
