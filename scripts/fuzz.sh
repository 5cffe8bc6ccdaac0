#!/usr/bin/env bash
# Fuzzes the TLSA parsers (fuzz/fuzz_targets/tlsa_parse.rs) for FUZZ_SECONDS seconds.
#
#   bash scripts/fuzz.sh                  # 20 s
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh
#
# Needs a nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz if it is
# missing. Exits non-zero when libFuzzer finds a crash; the input is saved under
# fuzz/artifacts/tlsa_parse/ and can be replayed with
#   cargo +nightly fuzz run tlsa_parse fuzz/artifacts/tlsa_parse/<file>
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-20}"
target="tlsa_parse"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

# cargo-fuzz wants nightly for its sanitizer flags. Without one (rustup's own servers may be
# out of reach), stable with RUSTC_BOOTSTRAP and no sanitizer still fuzzes for panics.
sanitizer=()
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz.sh: no $toolchain toolchain; fuzzing with stable, without sanitizer" >&2
    toolchain=stable
    export RUSTC_BOOTSTRAP=1
    sanitizer=(--sanitizer none)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

corpus="fuzz/corpus/$target"
mkdir -p "$corpus"

# Builds go to the shared target directory; the fuzz crate has its own Cargo.lock.
# The first corpus directory collects new inputs, the committed seeds are only read.
cargo "+$toolchain" fuzz run "${sanitizer[@]}" \
    --target-dir "${CARGO_TARGET_DIR:-$root/target}/fuzz" \
    "$target" "$corpus" "fuzz/seeds/$target" \
    -- \
    -max_total_time="$seconds" \
    -dict=fuzz/tlsa.dict \
    -max_len=4096 \
    -print_final_stats=1
