#!/usr/bin/env bash
# Builds the Debian package of danemta with cargo-deb and checks it with lintian:
#
#   bash scripts/package.sh                # release build -> target/debian/danemta_*.deb
#   PROFILE=dev bash scripts/package.sh    # package the debug binary already built by
#                                          # `cargo test` (the test suite's quick path)
#
# Installs what it needs on a fresh Debian 12 machine (as root): cargo-deb (pinned) with
# cargo, lintian with apt-get. The man pages and shell completions are generated from the
# clap definitions by the binary itself (`danemta manpages`, `danemta completions`).
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
cargo_deb_version=3.6.0

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
    echo "==> installing cargo-deb $cargo_deb_version" >&2
    cargo install cargo-deb --locked --version "$cargo_deb_version" >&2
fi
source scripts/lib/apt.sh
apt_install lintian

case $profile in
release) build=(cargo build --locked -p danemta --bin danemta --release) out=release ;;
# The debug binary exactly as `cargo test --workspace` builds it for the CLI's integration
# tests: the same command, so nothing is rebuilt after the test suite (`cargo build -p
# danemta` would resolve features for danemta alone and rebuild most dependencies).
dev) build=(cargo test --workspace --locked --no-run) out=debug ;;
*) build=(cargo build --locked -p danemta --bin danemta --profile "$profile") out=$profile ;;
esac
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
echo "==> ${build[*]}" >&2
"${build[@]}" >&2

bin=$target/$out/danemta
assets=$target/$out/deb-assets
rm -rf "$assets"
mkdir -p "$assets/completions"
"$bin" manpages "$assets/man" >/dev/null
# Debian policy 12.1: compressed, reproducibly (no name or time stamp). cargo-deb compresses
# only the files it does not consider built.
gzip -9n "$assets"/man/*.8
"$bin" completions bash >"$assets/completions/danemta.bash"
"$bin" completions zsh >"$assets/completions/_danemta"
"$bin" completions fish >"$assets/completions/danemta.fish"

echo "==> cargo deb" >&2
# --no-build: built above with the same profile (cargo-deb's own build cannot use dev).
deb=$(cargo deb -p danemta --locked --no-build --profile "$profile" --output "$target/debian" -q)
deb=${deb##*$'\n'}

echo "==> lintian $deb" >&2
# Errors fail the build; warnings are printed. Suppressed, with reasons:
#  - no-manual-page / initial-upload-closes-no-bugs: not applicable (pages are under man8;
#    the changelog is ours, not Debian's archive's);
#  - statically-linked-binary/embedded-library: Rust links its crates statically.
lintian --fail-on error --allow-root --tag-display-limit 0 \
    --suppress-tags initial-upload-closes-no-bugs,embedded-library \
    "$deb" >&2
echo "$deb"
