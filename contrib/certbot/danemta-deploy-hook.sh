#!/bin/sh
# danemta-deploy-hook.sh: a certbot deploy hook that installs a renewed certificate for
# danemta only when the DANE TLSA records already authenticate its key.
#
#   certbot certonly ... -d mx.example.org --deploy-hook /usr/local/sbin/danemta-deploy-hook
#
# certbot runs it after each successful renewal with RENEWED_LINEAGE (the lineage directory,
# e.g. /etc/letsencrypt/live/mx.example.org) and RENEWED_DOMAINS (its names, space separated)
# in the environment. Run by hand (or from a timer) it takes the lineage as its argument:
#
#   danemta-deploy-hook /etc/letsencrypt/live/mx.example.org
#
# What it does (docs/key-rollover.md explains why):
#   1. Nothing, exit 0, when danemta already has this lineage's chain and key.
#   2. For every TLSA name (RENEWED_DOMAINS, wildcards skipped) and port, runs
#        danemta tlsa rollover --gate --current INSTALLED-CHAIN --next NEW-CHAIN --name NAME ...
#      which exits 0 only when the new key is the old key, or when every authoritative name
#      server has published the new key's TLSA record next to the old one for at least twice
#      the RRset's TTL (RFC 7671 §8.1). The first installation (no installed chain) is not
#      gated.
#   3. Only if every gate passed: copies fullchain.pem and privkey.pem to
#      DANEMTA_CERT_DIR/LINEAGE/ (root:DANEMTA_GROUP, mode 0640 in a 0750 directory,
#      replaced atomically), then
#      runs DANEMTA_RELOAD_CMD (SIGHUP: danemta re-reads its certificates).
#   4. If a gate did not pass: installs nothing, reloads nothing, prints the TLSA records to
#      publish and exits with the gate's status (75 = not yet), so that certbot reports it.
#      danemta keeps serving the old certificate; run the hook again later (by hand, or from
#      a timer: it does nothing once installed) to finish.
#
# Point danemta at the installed copies, not at /etc/letsencrypt (which certbot changes
# before any gate could run):
#   [[server.tls]]
#   cert = "/etc/danemta/tls/mx.example.org/fullchain.pem"
#   key = "/etc/danemta/tls/mx.example.org/privkey.pem"
#
# Settings: environment variables, or shell assignments in DANEMTA_HOOK_CONFIG
# (default /etc/danemta/certbot-hook.conf, read when it exists; it must be root's).
#   DANEMTA_BIN         the danemta binary                    (/usr/bin/danemta)
#   DANEMTA_CERT_DIR    where the chains for danemta live     (/etc/danemta/tls)
#   DANEMTA_GROUP       group that may read the key           (danemta)
#   DANEMTA_RELOAD_CMD  run after installing, by sh -c        (systemctl reload danemta)
#   DANEMTA_TLSA_NAMES  MX host names whose TLSA records pin this certificate
#                       (default: RENEWED_DOMAINS without wildcards)
#   DANEMTA_TLSA_PORTS  ports of those TLSA records           (25; e.g. "25 465" for submissions)
#   DANEMTA_RESOLVER    --resolver for the gate               (validating)
#   DANEMTA_TRUST_ANCHOR  --trust-anchor for the gate         (unset: the IANA root anchors)
#   DANEMTA_STATE_DIR   the gate's memory of since when both records are published
#                       (/var/lib/danemta/rollover)
#   DANEMTA_LINEAGES    if set, only these lineage names are handled; others are skipped
#                       (for a hook installed in /etc/letsencrypt/renewal-hooks/deploy/)
#
# Exit status: 0 installed (or nothing to do); 75 a gate says not yet; 64 usage; 66 a lineage
# file is missing; another non-zero status: the gate's, or the reload command's.

set -eu

me=danemta-deploy-hook

say() {
    printf '%s: %s\n' "$me" "$*" >&2
}

die() {
    status=$1
    shift
    say "$*"
    exit "$status"
}

conf=${DANEMTA_HOOK_CONFIG:-/etc/danemta/certbot-hook.conf}
if [ -f "$conf" ]; then
    # shellcheck source=/dev/null
    . "$conf"
fi

lineage=${RENEWED_LINEAGE:-${1:-}}
[ -n "$lineage" ] || die 64 "usage: RENEWED_LINEAGE=DIR $0, or $0 DIR (a certbot lineage, e.g. /etc/letsencrypt/live/mx.example.org)"
lineage=${lineage%/}
name=$(basename "$lineage")

bin=${DANEMTA_BIN:-/usr/bin/danemta}
cert_dir=${DANEMTA_CERT_DIR:-/etc/danemta/tls}
group=${DANEMTA_GROUP:-danemta}
reload_cmd=${DANEMTA_RELOAD_CMD:-systemctl reload danemta}
state_dir=${DANEMTA_STATE_DIR:-/var/lib/danemta/rollover}
tlsa_names=${DANEMTA_TLSA_NAMES:-${RENEWED_DOMAINS:-}}
tlsa_ports=${DANEMTA_TLSA_PORTS:-25}
resolver=${DANEMTA_RESOLVER:-validating}
trust_anchor=${DANEMTA_TRUST_ANCHOR:-}
lineages=${DANEMTA_LINEAGES:-}

if [ -n "$lineages" ]; then
    case " $lineages " in
    *" $name "*) ;;
    *)
        say "$name: not in DANEMTA_LINEAGES ($lineages); nothing to do"
        exit 0
        ;;
    esac
fi

new_chain=$lineage/fullchain.pem
new_key=$lineage/privkey.pem
[ -r "$new_chain" ] || die 66 "$new_chain: missing or unreadable"
[ -r "$new_key" ] || die 66 "$new_key: missing or unreadable"

dest=$cert_dir/$name
cur_chain=$dest/fullchain.pem
cur_key=$dest/privkey.pem

if [ -f "$cur_chain" ] && [ -f "$cur_key" ] &&
    cmp -s "$new_chain" "$cur_chain" && cmp -s "$new_key" "$cur_key"; then
    say "$name: danemta already has this certificate and key ($dest); nothing to do"
    exit 0
fi

# The TLSA names: wildcards cannot be MX hosts.
names=
for n in $tlsa_names; do
    case $n in
    '*.'*) say "$n: a wildcard, not a TLSA name; skipped" ;;
    *) names="$names $n" ;;
    esac
done

# The records that authenticate the new key, for the operator.
records() {
    for n in $names; do
        for p in $tlsa_ports; do
            "$bin" tlsa generate --cert "$new_chain" --name "$n" --port "$p" 2>/dev/null ||
                say "cannot make the TLSA record of $new_chain for $n port $p"
        done
    done
}

gate_status=0
if [ ! -f "$cur_chain" ]; then
    say "$name: first installation into $dest (no installed chain to roll over from)"
elif [ -z "$names" ]; then
    die 64 "$name: no TLSA name to check (set DANEMTA_TLSA_NAMES, e.g. \"mx.example.org\"); nothing installed"
else
    mkdir -p "$state_dir"
    chmod 0700 "$state_dir"
    for n in $names; do
        for p in $tlsa_ports; do
            set -- tlsa rollover --gate --current "$cur_chain" --next "$new_chain" \
                --name "$n" --port "$p" --state "$state_dir/rollover-$p-$n.json" \
                --resolver "$resolver"
            if [ -n "$trust_anchor" ]; then
                set -- "$@" --trust-anchor "$trust_anchor"
            fi
            say "gate: $bin $*"
            status=0
            "$bin" "$@" >&2 || status=$?
            if [ "$status" -ne 0 ]; then
                say "gate for _$p._tcp.$n: not passed (exit status $status)"
                if [ "$gate_status" -eq 0 ] || [ "$gate_status" -eq 75 ]; then
                    gate_status=$status
                fi
            fi
        done
    done
fi

if [ "$gate_status" -ne 0 ]; then
    say "$name: the new certificate is NOT installed: its key is not yet safely published in DNS."
    say "danemta keeps serving $cur_chain."
    say "Publish these TLSA records next to the current ones (keep the current ones), in the signed zone:"
    records >&2
    say "then run this again once both have been published for twice the TTL:"
    say "  RENEWED_LINEAGE=$lineage $0"
    exit "$gate_status"
fi

# Install: both files into temporary names in the same directory, then renamed over the old
# ones, so that danemta never reads half a file.
# DANEMTA_CERT_DIR itself is left as it is when it exists (it may be /etc/danemta, which
# sendmail users must be able to read); the lineage's directory is root:GROUP 0750.
if [ ! -d "$cert_dir" ]; then
    mkdir -p "$cert_dir"
    chmod 0755 "$cert_dir"
fi
umask 077
if [ ! -d "$dest" ]; then
    mkdir "$dest"
fi
chown "root:$group" "$dest"
chmod 0750 "$dest"
tmp_key=$(mktemp "$dest/.privkey.pem.XXXXXX")
tmp_chain=$(mktemp "$dest/.fullchain.pem.XXXXXX")
trap 'rm -f "$tmp_key" "$tmp_chain"' EXIT
cat "$new_key" >"$tmp_key"
cat "$new_chain" >"$tmp_chain"
chown "root:$group" "$tmp_key" "$tmp_chain"
chmod 0640 "$tmp_key" "$tmp_chain"
mv -f "$tmp_key" "$cur_key"
mv -f "$tmp_chain" "$cur_chain"
trap - EXIT
say "$name: installed $cur_chain and $cur_key (root:$group 0640)"

status=0
sh -c "$reload_cmd" || status=$?
if [ "$status" -ne 0 ]; then
    die "$status" "reload failed (exit status $status): $reload_cmd; danemta still serves the old certificate until it re-reads its certificates"
fi
say "reloaded: $reload_cmd"
if [ -n "$names" ]; then
    say "TLSA records of the key now in use:"
    records >&2
    say "remove the previous key's TLSA record once twice its TTL has passed (RFC 7671 §8.1)."
fi
exit 0
