#!/usr/bin/env bash
# Tests of alerts/: promtool, amtool, the topology generator, lint, the inhibition matrix on a real
# Alertmanager and the storm test on real Prometheus + Alertmanager (loopback only, temp dirs,
# daemons stopped by PID), the storm test on real Prometheus + Alertmanager and the fleet test
# (tests/fleet.py: Prometheus shards remote-writing to VictoriaMetrics, built exporters from
# target/debug). Runs every step, prints a summary, exits non-zero if any step failed.
#   alerts/test.sh            everything (about 3 minutes, most of it the storm and the fleet)
#   alerts/test.sh --quick    everything but the storm and the fleet
set -u
cd "$(dirname "$0")"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

missing=()
for bin in promtool amtool prometheus prometheus-alertmanager python3; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ $quick -eq 0 ]; then
  command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "alerts/test.sh: missing ${missing[*]} (Debian packages prometheus, prometheus-alertmanager, python3, victoria-metrics; see scripts/install-deps.sh)" >&2
  exit 1
fi

declare -a results
failed=0
step() {
  local name=$1
  shift
  echo "== $name"
  local start=$SECONDS
  if "$@"; then
    results+=("ok    $(printf '%4ss' $((SECONDS - start)))  $name")
  else
    results+=("FAIL  $(printf '%4ss' $((SECONDS - start)))  $name")
    failed=1
  fi
}

step "promtool check rules" promtool check rules rules/*.yml topology/example.rules.yml
step "promtool test rules" promtool test rules tests/*.test.yml
step "amtool check-config" amtool check-config alertmanager.yml
routes() {
  # labels -> expected receiver, through amtool's own routing of the shipped config
  local ok=0
  while read -r want labels; do
    [ -z "$want" ] && continue
    # shellcheck disable=SC2086
    if ! amtool config routes test --config.file=alertmanager.yml --verify.receivers="$want" $labels >/dev/null 2>&1; then
      echo "  route of {$labels}: not $want"
      ok=1
    fi
  done <<'CASES'
pager severity=critical alertname=RackDown rack=r1
pager severity=critical alertname=OvsDirtyFlows node=n1 rack=r1
chat severity=warning alertname=ExporterDown node=n1
mail severity=info alertname=Something
chat alertname=NoSeverity
CASES
  return $ok
}

step "amtool routes" routes
step "topology example rules up to date" python3 topology/gen_rules.py --check topology/example.rules.yml topology/node-rack.example.txt
step "topology generator" python3 tests/harness.py gen
step "lint (real Prometheus)" python3 tests/harness.py lint
step "inhibition matrix (real Alertmanager)" python3 tests/harness.py inhibition
step "rules on the exporters' golden outputs (real Prometheus)" python3 tests/harness.py golden
if [ $quick -eq 0 ]; then
  step "storm (real Prometheus + Alertmanager)" python3 tests/harness.py storm
  step "fleet: 2 Prometheus shards, 24 exporters, VictoriaMetrics" python3 tests/fleet.py
fi

echo
echo "alerts/ test summary:"
printf '  %s\n' "${results[@]}"
exit $failed
