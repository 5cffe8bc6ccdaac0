#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian 12 machine (as root): installs what the
# tests need, then checks formatting and lints, runs every unit, integration, conformance and
# property test, and a short fuzzing run of every fuzz target (the quick build, see
# scripts/fuzz.sh).
#
#   bash scripts/test.sh              # everything
#   FUZZ_SECONDS=0 bash scripts/test.sh   # skip the fuzzing run
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: OpenSSL's CLI cross-checks our digests; gcc builds ring;
# nsd, unbound and ldnsutils (ldns-keygen/-signzone/-key2ds, drill) run the DNSSEC test lab
# of crates/lab; postfix runs its SMTP receivers (private instances, never the system one);
# swaks submits mail; sqlite3 checks the queue database after every kill of the crash soak;
# postgresql runs the private database servers of the shared queue store's tests; lintian
# checks the Debian package (scripts/package.sh, which also installs cargo-deb).
apt_packages=(openssl ca-certificates gcc libc6-dev nsd unbound ldnsutils postfix swaks sqlite3 postgresql lintian)
source scripts/lib/apt.sh
# postfix asks debconf what kind of mail system this is: none (no main.cf is written, so even
# a started system Postfix would not listen on port 25).
if command -v debconf-set-selections >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi
apt_install "${apt_packages[@]}"
# A system nsd/unbound/postfix (started before this script, or by systemd despite policy-rc.d)
# may hold port 53 or 25 on every address; stop and disable them. The lab avoids 127.0.0.1
# anyway, so this is a safety net.
stop_services nsd unbound postfix
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

shared=${DANEMTA_SHARED:-../shared}
[ -d "$shared/conformance/openssl-dane" ] || {
    echo "error: conformance data missing: $shared/conformance/openssl-dane (set DANEMTA_SHARED)" >&2
    exit 1
}
export DANEMTA_SHARED="$(cd "$shared" && pwd)"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked

echo "==> the library crates: cargo package, cargo doc without warnings, doc tests"
bash scripts/check-library.sh
echo "==> contrib/: Prometheus alert rules (promtool check and unit tests), Grafana dashboard"
bash scripts/check-contrib.sh
echo "==> the Debian package: build (the debug binary just tested), lintian, install, purge"
PROFILE=dev bash scripts/package-test.sh

if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    echo "==> fuzzing all targets (TLSA parser ${FUZZ_SECONDS:-20} s, the others ${FUZZ_SECONDS_EACH:-10} s each)"
    FUZZ_BUILD="${FUZZ_BUILD:-quick}" bash scripts/fuzz.sh
fi
echo "==> all tests passed"
