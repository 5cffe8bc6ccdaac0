# shellcheck shell=bash
# Debian package installation for the scripts (sourced, not run): bash, as root.
#
#   apt_install [--no-install-recommends] PKG...   installs the packages not installed yet
#   stop_services SVC...                           stops and disables system services
#
# Installing nsd, unbound, postfix or prometheus would start system services (binding ports
# 53, 25 or 9090 on every address); apt_install forbids service starts while it runs
# (policy-rc.d exiting 101 is the Debian way), restoring any existing policy afterwards.

apt_install() {
    local flags=() missing=() p
    if [ "${1:-}" = --no-install-recommends ]; then
        flags+=("$1")
        shift
    fi
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "==> installing Debian packages: ${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d policy_backup="" status=0
    if [ -e "$policy" ]; then
        policy_backup=$(mktemp)
        cp -p "$policy" "$policy_backup"
    fi
    printf '#!/bin/sh\n# danemta scripts/lib/apt.sh: no service starts during the package install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${flags[@]}" "${missing[@]}"; } >&2 || status=$?
    if [ -n "$policy_backup" ]; then mv -f "$policy_backup" "$policy"; else rm -f "$policy"; fi
    if ((status)); then
        echo "error: could not install ${missing[*]} with apt-get (are you root, is a mirror reachable?)" >&2
        return 1
    fi
}

stop_services() {
    local svc
    for svc in "$@"; do
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$svc" ]; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
            if command -v update-rc.d >/dev/null; then update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
        fi
    done
}
