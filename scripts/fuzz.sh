#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets/, one after the other:
#
#   tlsa_parse    the TLSA parsers, both forms                         FUZZ_SECONDS (20 s)
#   smtp_command  SMTP command lines (smtp::server::command::parse)    FUZZ_SECONDS_EACH (10 s)
#   smtp_data     DATA content (smtp::server::data::DataReader)        FUZZ_SECONDS_EACH
#   relay_config  the relay's configuration (relay::config::Config)    FUZZ_SECONDS_EACH
#   queue_record  the queue's JSON records (Attempt, RecipientOutcome,
#                 DsnParams, Security)                                 FUZZ_SECONDS_EACH
#   sts_policy    MTA-STS policy files, the _mta-sts and _smtp._tls
#                 TXT records, mx patterns (crate sts)                 FUZZ_SECONDS_EACH
#
#   bash scripts/fuzz.sh                  # 20 s + 5 × 10 s
#   FUZZ_SECONDS=600 FUZZ_SECONDS_EACH=300 bash scripts/fuzz.sh
#   FUZZ_TARGETS="smtp_data" bash scripts/fuzz.sh    # only these (space-separated)
#   FUZZ_BUILD=quick bash scripts/fuzz.sh   # what scripts/test.sh runs, see below
#
# FUZZ_BUILD: `sanitized` (the default) builds the targets in release mode with
# AddressSanitizer, for long runs; `quick` builds them with fuzz/Cargo.toml's dev profile
# (opt-level 1, no debug info) and no sanitizer: it builds in about half the time (the
# release build of the relay's dependencies with ASAN is most of a cold CI run's fuzzing
# stage) and even runs faster (no ASAN checks). Our crates are `#![forbid(unsafe_code)]`, so
# what ASAN adds is checks of the dependencies' unsafe code; the quick build still catches
# every panic, overflow (debug assertions) and timeout.
#
# Each target reads its committed seeds (fuzz/seeds/<target>/) and collects new inputs in
# fuzz/corpus/<target>/ (not committed). Needs a nightly toolchain (rustup toolchain install
# nightly); installs cargo-fuzz if it is missing. Every target runs even after one fails;
# exits non-zero when libFuzzer finds a crash in any of them. The input is saved under
# fuzz/artifacts/<target>/ and can be replayed with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# (with ASAN_OPTIONS=detect_odr_violation=0, see below).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-20}"
seconds_each="${FUZZ_SECONDS_EACH:-10}"
targets="${FUZZ_TARGETS:-tlsa_parse smtp_command smtp_data relay_config queue_record sts_policy}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

# cargo-fuzz wants nightly for its sanitizer flags. Without one (rustup's own servers may be
# out of reach), stable with RUSTC_BOOTSTRAP and no sanitizer still fuzzes for panics.
sanitizer=()
build=()
case "${FUZZ_BUILD:-sanitized}" in
    sanitized) ;;
    quick) build=(--dev) sanitizer=(--sanitizer none) ;;
    *) echo "fuzz.sh: FUZZ_BUILD=${FUZZ_BUILD}: want sanitized or quick" >&2; exit 64 ;;
esac
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

# The relay links the bundled SQLite, whose C globals AddressSanitizer reports as an ODR
# violation at start-up (before any input): not a finding, so that check is off.
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

# Per target: seconds, then extra libFuzzer flags (dictionary, input size).
options() {
    case "$1" in
        tlsa_parse) echo "$seconds -dict=fuzz/tlsa.dict -max_len=4096" ;;
        smtp_command) echo "$seconds_each -dict=fuzz/smtp.dict -max_len=1024" ;;
        smtp_data) echo "$seconds_each -dict=fuzz/smtp.dict -max_len=4096" ;;
        relay_config) echo "$seconds_each -dict=fuzz/config.dict -max_len=8192" ;;
        queue_record) echo "$seconds_each -max_len=4096" ;;
        sts_policy) echo "$seconds_each -max_len=4096" ;;
        *)
            echo "fuzz.sh: unknown target $1" >&2
            return 1
            ;;
    esac
}

failed=()
for target in $targets; do
    read -r time flags <<<"$(options "$target")"
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    echo "fuzz.sh: $target for $time s" >&2
    # Builds go to the shared target directory; the fuzz crate has its own Cargo.lock.
    # The first corpus directory collects new inputs, the committed seeds are only read.
    # shellcheck disable=SC2086 # $flags is a list of flags
    if ! cargo "+$toolchain" fuzz run "${build[@]}" "${sanitizer[@]}" \
        --target-dir "${CARGO_TARGET_DIR:-$root/target}/fuzz" \
        "$target" "$corpus" "fuzz/seeds/$target" \
        -- \
        -max_total_time="$time" \
        $flags \
        -print_final_stats=1; then
        artifact="$(ls -t "fuzz/artifacts/$target"/* 2>/dev/null | head -n 1 || true)"
        echo "fuzz.sh: $target FAILED; input: ${artifact:-(none saved, see the output above)}" >&2
        echo "fuzz.sh: replay: cargo +$toolchain fuzz run $target ${artifact:-fuzz/artifacts/$target/<file>}" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: all targets passed: $targets" >&2
