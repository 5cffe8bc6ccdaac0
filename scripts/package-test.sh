#!/usr/bin/env bash
# Installs the Debian package on this machine, checks it as an operator would, and purges it:
#
#   bash scripts/package-test.sh                 # packages the debug build (PROFILE=dev)
#   PROFILE=release bash scripts/package-test.sh # the release package
#   DEB=path/to/danemta.deb bash scripts/package-test.sh
#
# Needs root. Installs and purges twice (a second run on a machine where it ran before must
# pass too); whatever happens, the package is purged at exit. An MTA already installed
# (Postfix in the test suite) keeps its sendmail, mailq and /usr/lib/sendmail; the second
# round diverts its sendmail as README.md says, and danemta's takes the name.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${DEB:-$(PROFILE=${PROFILE:-dev} bash scripts/package.sh | tail -n 1)}
deb=$(realpath "$deb")
work=$(mktemp -d)
daemon_pid=
diverted=
undivert() {
    dpkg-divert --local --rename --remove /usr/sbin/sendmail >/dev/null
    diverted=
}
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    dpkg --purge danemta >/dev/null 2>&1 || true
    [ -n "$diverted" ] && undivert
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "package test FAILED: $*" >&2
    exit 1
}
check() { # check DESCRIPTION COMMAND...: runs COMMAND, fails with DESCRIPTION if it fails
    local what=$1
    shift
    "$@" >"$work/out" 2>&1 || { cat "$work/out" >&2; fail "$what"; }
}

# What another MTA installed as sendmail (Postfix: a file and two links to it), to compare.
mta_paths=(/usr/sbin/sendmail /usr/bin/mailq /usr/lib/sendmail)
mta_files() {
    local p
    for p in "${mta_paths[@]}"; do
        if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"; elif [ -e "$p" ]; then echo "$p $(sha256sum <"$p")"; fi
    done
}
mta_before=$(mta_files)
other_mta=
[ -e /usr/sbin/sendmail ] && [ "$(readlink /usr/sbin/sendmail)" != /etc/alternatives/sendmail ] && other_mta=yes
free_port() { # a port nothing listens on, from the range the kernel leaves alone
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
    echo "$port"
}

for round in 1 2; do
    # Round 2 with another MTA installed: its sendmail diverted as the README says, after
    # which danemta's takes the name.
    if [ "$round" = 2 ] && [ -n "$other_mta" ]; then
        echo "==> round 2: dpkg-divert --local --rename --add /usr/sbin/sendmail"
        check "dpkg-divert" dpkg-divert --local --rename --add /usr/sbin/sendmail
        diverted=yes
    fi
    echo "==> round $round: dpkg -i $(basename "$deb")"
    check "dpkg -i" dpkg -i "$deb"
    dpkg-query -W -f='${Status}' danemta | grep -qx "install ok installed" || fail "not installed"

    # The binary as installed.
    danemta --version | grep -q '^danemta ' || fail "danemta --version: $(danemta --version)"
    check "serve --check-config as root" danemta serve --check-config --config /etc/danemta/danemta.toml
    check "serve --check-config as the danemta user" \
        runuser -u danemta -- danemta serve --check-config --config /etc/danemta/danemta.toml

    # The system user and its spool; the conffile.
    [ "$(getent passwd danemta | cut -d: -f7)" = /usr/sbin/nologin ] || fail "danemta user: $(getent passwd danemta)"
    [ "$(stat -c '%U:%G %a' /var/spool/danemta)" = "danemta:danemta 750" ] ||
        fail "spool: $(stat -c '%U:%G %a' /var/spool/danemta)"
    dpkg-query --control-show danemta conffiles | grep -qx '/etc/danemta/danemta.toml' ||
        fail "/etc/danemta/danemta.toml is not a conffile"

    # Man pages: danemta(8) and one per subcommand, rendering without a groff warning.
    pages=(/usr/share/man/man8/danemta*.8.gz)
    ((${#pages[@]} >= 15)) || fail "only ${#pages[@]} man pages"
    for page in /usr/share/man/man8/danemta.8.gz /usr/share/man/man8/danemta-serve.8.gz \
        /usr/share/man/man8/danemta-tlsa-rollover.8.gz; do
        [ -f "$page" ] || fail "missing $page"
    done
    for page in "${pages[@]}"; do
        warnings=$(zcat "$page" | preconv | groff -man -Tutf8 -ww -z 2>&1)
        [ -z "$warnings" ] || fail "$page: $warnings"
    done
    man -l /usr/share/man/man8/danemta-serve.8.gz 2>/dev/null | grep -q -- '--check-config' ||
        fail "danemta-serve(8) does not document --check-config"

    # Completions for bash, zsh and fish.
    bash -c 'source /usr/share/bash-completion/completions/danemta && complete -p danemta' >/dev/null ||
        fail "bash completion"
    grep -q '#compdef danemta' /usr/share/zsh/vendor-completions/_danemta || fail "zsh completion"
    grep -q 'complete -c danemta' /usr/share/fish/vendor_completions.d/danemta.fish || fail "fish completion"

    # The unit: valid, and hardened (systemd's exposure score, 0 best .. 10 worst).
    if command -v systemd-analyze >/dev/null; then
        check "systemd-analyze verify" systemd-analyze verify /usr/lib/systemd/system/danemta.service
        score=$(systemd-analyze security --offline=yes /usr/lib/systemd/system/danemta.service 2>/dev/null |
            sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
        [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' ||
            fail "systemd-analyze security: exposure ${score:-unknown}, want <= 2.0"
        echo "    systemd-analyze security: $score"
    fi

    # sendmail through alternatives, never over another MTA's file or links.
    if [ -n "$other_mta" ] && [ -z "$diverted" ]; then
        [ "$(mta_files)" = "$mta_before" ] || fail "the other MTA's sendmail changed: $(mta_files)"
        ! update-alternatives --query sendmail 2>/dev/null | grep -q danemta ||
            fail "sendmail alternative registered over another MTA's"
    else
        update-alternatives --query sendmail | grep -qx 'Alternative: /usr/bin/danemta' ||
            fail "no sendmail alternative"
        [ "$(readlink -f /usr/sbin/sendmail)" = /usr/bin/danemta ] || fail "/usr/sbin/sendmail is not danemta"
        [ "$(readlink -f /usr/bin/mailq)" = /usr/bin/danemta ] || fail "mailq is not danemta"
    fi

    # The daemon as the danemta user on the packaged spool (a test port instead of 25, which
    # needs the unit's CAP_NET_BIND_SERVICE): mail from an ordinary user goes through it,
    # root's sendmail writes the spool as danemta, mailq (argv0) lists both.
    port=$(free_port)
    metrics_port=$(free_port)
    config=$work/danemta.toml
    sed -e "s/^address = \"0.0.0.0:25\"/address = \"127.0.0.1:$port\"/" \
        -e "s/^# listen = \"127.0.0.1:9325\"/listen = \"127.0.0.1:$metrics_port\"/" \
        /etc/danemta/danemta.toml >"$config"
    grep -q "127.0.0.1:$port" "$config" && grep -q "127.0.0.1:$metrics_port" "$config" ||
        fail "the example configuration no longer has its listen lines"
    chmod 755 "$work" && chmod 644 "$config"
    runuser -u danemta -- danemta serve --config "$config" >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    printf 'Subject: from nobody\n\nhello\n' |
        runuser -u nobody -- danemta sendmail -C "$config" -v postmaster@example.test >"$work/out" 2>&1 ||
        { cat "$work/out" "$work/daemon.log" >&2; fail "sendmail as nobody"; }
    grep -q 'handed to the daemon: 250' "$work/out" || fail "sendmail as nobody: $(cat "$work/out")"
    printf 'Subject: from root\n\nhello\n' | danemta sendmail -C "$config" postmaster@example.test ||
        fail "sendmail as root"
    ln -sf /usr/bin/danemta "$work/mailq"
    "$work/mailq" --config "$config" >"$work/out" 2>&1 || { cat "$work/out" >&2; fail "mailq"; }
    [ "$(grep -c 'postmaster@example.test' "$work/out")" = 2 ] || fail "mailq: $(cat "$work/out")"
    strays=$(find /var/spool/danemta ! -user danemta)
    [ -z "$strays" ] || fail "spool files not owned by danemta: $strays"
    kill "$daemon_pid"
    wait "$daemon_pid" || true
    daemon_pid=

    echo "==> round $round: dpkg --purge danemta"
    check "dpkg --purge" dpkg --purge danemta
    for gone in /usr/bin/danemta /etc/danemta /var/spool/danemta /usr/lib/systemd/system/danemta.service; do
        [ ! -e "$gone" ] || fail "$gone left after purge"
    done
    ! update-alternatives --query sendmail 2>/dev/null | grep -q danemta || fail "sendmail alternative left"
    [ -n "$diverted" ] && undivert
    [ "$(mta_files)" = "$mta_before" ] || fail "sendmail changed by install and purge: $(mta_files)"
done
echo "==> package test passed"
