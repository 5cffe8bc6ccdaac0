#!/usr/bin/env bash
# Checks the monitoring files under contrib/ (run by scripts/test.sh; runnable alone on a
# fresh Debian 12 machine, as root when promtool or jq must be installed):
#
#   * contrib/prometheus/danemta-alerts.yml: `promtool check rules`;
#   * contrib/prometheus/danemta-alerts.test.yml: `promtool test rules` (every alert fires
#     and stays quiet where it should);
#   * contrib/grafana/danemta.json: valid JSON, a Grafana dashboard with the `datasource` and
#     `instance` template variables, every panel querying through `${datasource}`;
#   * every `danemta_*` metric name used by the rules, their tests and the dashboard exists in
#     crates/relay/src/metrics.rs or crates/dns/src/resolver.rs (the exporter adds no suffix:
#     the counters' names end in `_total` in the code already).
#
# promtool comes from Debian's `prometheus` package, installed (with jq) when missing, with
# service starts forbidden (policy-rc.d exiting 101) and the prometheus service disabled
# afterwards: this script never leaves a Prometheus server running.
#
#   bash scripts/check-contrib.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rules=contrib/prometheus/danemta-alerts.yml
tests=contrib/prometheus/danemta-alerts.test.yml
dashboard=contrib/grafana/danemta.json
sources=(crates/relay/src/metrics.rs crates/dns/src/resolver.rs)

source scripts/lib/apt.sh
# promtool alone is wanted: no recommends, and the services the package enables are stopped.
apt_install --no-install-recommends prometheus jq
stop_services prometheus prometheus-node-exporter

failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}

echo "==> promtool check rules $rules"
promtool check rules "$rules" || fail "promtool check rules $rules"

echo "==> promtool test rules $tests"
# promtool resolves rule_files relative to the test file.
promtool test rules "$tests" || fail "promtool test rules $tests"

echo "==> $dashboard"
if ! jq empty "$dashboard"; then
    fail "$dashboard is not valid JSON"
else
    jq -e '.templating.list | map(.name) | (index("datasource") != null and index("instance") != null)' \
        "$dashboard" >/dev/null || fail "$dashboard: the datasource and instance template variables are missing"
    jq -e '.templating.list[] | select(.name == "datasource") | .type == "datasource" and .query == "prometheus"' \
        "$dashboard" >/dev/null || fail "$dashboard: the datasource variable is not a Prometheus datasource variable"
    jq -e '(.panels | length) > 0 and (.schemaVersion | type) == "number" and (.uid | type) == "string"' \
        "$dashboard" >/dev/null || fail "$dashboard: no panels, schemaVersion or uid"
    # Every panel with queries uses the datasource variable, and every query selects the instance.
    bad=$(jq -r '[.panels[] | select(.targets != null)
                  | select((.datasource.uid // "") != "${datasource}"
                           or any(.targets[]; (.datasource.uid // "${datasource}") != "${datasource}"
                                              or ((.expr // "") | test("instance=~\"\\$instance\"") | not)))
                  | .title] | join(", ")' "$dashboard")
    [ -z "$bad" ] || fail "$dashboard: panels not querying \${datasource} with instance=~\"\$instance\": $bad"
    # The panels' PromQL, with Grafana's variables given values, must parse: promtool checks
    # it as recording rules.
    exprs=$(mktemp --suffix=.yml)
    jq -r '"groups:\n  - name: dashboard\n    rules:",
           ([.panels[] | select(.targets != null) | .targets[] | .expr] | to_entries[]
            | "      - record: dashboard_expr_\(.key)\n        expr: \(.value | gsub("\\$__rate_interval"; "5m") | gsub("\\$instance"; ".+") | tojson)")' \
        "$dashboard" >"$exprs"
    promtool check rules "$exprs" >/dev/null || fail "$dashboard: a panel's query is not valid PromQL (promtool check rules $exprs)"
    rm -f "$exprs"
    dupes=$(jq -r '[.panels[].id] | group_by(.) | map(select(length > 1) | .[0]) | map(tostring) | join(", ")' "$dashboard")
    [ -z "$dupes" ] || fail "$dashboard: duplicate panel ids: $dupes"
fi

echo "==> metric names"
names=$(grep -ohE 'danemta_[a-z0-9_]+' "$rules" "$tests" "$dashboard" | sort -u || true)
[ -n "$names" ] || fail "no danemta_* metric names found in the rules and the dashboard"
for name in $names; do
    base=$name
    # Histogram and summary series carry suffixes the code does not name.
    for suffix in _bucket _sum _count; do
        if ! grep -q "\"$base\"" "${sources[@]}" && [[ $base == *"$suffix" ]]; then
            base=${base%"$suffix"}
        fi
    done
    if grep -q "\"$base\"" "${sources[@]}"; then
        echo "    $name"
    else
        fail "$name is used in contrib/ but defined in none of ${sources[*]}"
    fi
done

if ((failed)); then
    echo "contrib checks failed" >&2
    exit 1
fi
echo "contrib checks passed"
