#!/usr/bin/env bash
# Offline validation of deploy/: the PrometheusRules match alerts/, kustomize renders, the
# rendered objects pass Kubernetes schema validation (kubernetes-validate from PyPI, --strict),
# and the rules inside the rendered PrometheusRules load in promtool.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

bash "$REPO/deploy/kubernetes/gen-prometheusrules.sh" --check || fail=1

if ! command -v kubectl >/dev/null; then
  echo "FAIL kubectl not found (it renders the kustomize base)"; exit 1
fi
kubectl kustomize "$REPO/deploy/kubernetes/base" > "$TMP/rendered.yaml"
echo "ok   kubectl kustomize: $(grep -c '^kind:' "$TMP/rendered.yaml") objects"

VENV="$REPO/target/deploy-venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate==1.37.0
fi
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
print(n)
PY
if promtool check rules "$TMP"/rule-*.yml > "$TMP/promtool.out" 2>&1; then
  echo "ok   promtool check rules on the rendered PrometheusRules"
else
  cat "$TMP/promtool.out"; echo "FAIL promtool on rendered PrometheusRules"; fail=1
fi
exit $fail
