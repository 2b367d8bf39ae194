#!/usr/bin/env bash
# Offline check of the tenant rule sets setup: the example overlay (base + component + one
# team's ConfigMap) renders, the DaemonSet has what the component promises, and every tenant
# ConfigMap's rule set passes `log_pattern_exporter check-rules` under the base's platform file.
# Usage: check.sh [path/to/log_pattern_exporter [RENDERED_OUT]]
#   (default: $CARGO_TARGET_DIR or target/ debug build, else log_pattern_exporter on PATH;
#   RENDERED_OUT: where to leave the rendered example, for a caller that validates it further)
# Schema validation of the rendered objects: deploy/test.sh (kubernetes-validate)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
BIN="${1:-${CARGO_TARGET_DIR:-$REPO/target}/debug/log_pattern_exporter}"
if [ ! -x "$BIN" ] && command -v log_pattern_exporter >/dev/null; then
  BIN="$(command -v log_pattern_exporter)"
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# kustomize: deploy/test.sh puts the pinned one (deploy/tools) first on PATH; else kubectl's.
if command -v kustomize >/dev/null; then
  kustomize build "$HERE/example" > "$TMP/rendered.yaml"
else
  kubectl kustomize "$HERE/example" > "$TMP/rendered.yaml"
fi
if [ -n "${2:-}" ]; then cp "$TMP/rendered.yaml" "$2"; fi
echo "ok   kustomize tenant-rules/example: $(grep -c '^kind:' "$TMP/rendered.yaml") objects"

python3 - "$TMP/rendered.yaml" "$TMP" <<'PY'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = sys.argv[2]
fail = []
ds = next(d for d in docs if d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
c = {x["name"]: x for x in spec["containers"]}
lp, sync = c["log-pattern"], c.get("rules-sync")
if "--config.dir=/etc/log-pattern/rules.d" not in lp["args"]:
    fail.append("log-pattern lacks --config.dir")
if not any(m["name"] == "tenant-rules" and m.get("readOnly") for m in lp["volumeMounts"]):
    fail.append("log-pattern must mount tenant-rules read-only")
if sync is None:
    fail.append("no rules-sync container")
else:
    if spec.get("automountServiceAccountToken") is not False:
        fail.append("the token must not be mounted into every container")
    if not any(m["name"] == "rules-sync-token" for m in sync["volumeMounts"]):
        fail.append("rules-sync lacks its token")
    for name, x in c.items():
        if name != "rules-sync" and any(m["name"] == "rules-sync-token" for m in x.get("volumeMounts", [])):
            fail.append(f"{name} must not mount the token")
    sc = sync["securityContext"]
    if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc["capabilities"]["drop"] == ["ALL"]):
        fail.append("rules-sync must run non-root, read-only, without capabilities")
role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "log-pattern-rules-sync")
if role["rules"] != [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]:
    fail.append(f"rules-sync role is not least privilege: {role['rules']}")
# The platform file and every tenant rule set, as the exporter would read them.
os.makedirs(f"{out}/rules.d")
for d in docs:
    if d["kind"] != "ConfigMap":
        continue
    data = d.get("data", {})
    if d["metadata"]["name"].startswith("exporter-config"):
        open(f"{out}/platform.yml", "w").write(data["log-rules.yml"])
    elif "log-pattern-rules/tenant" in d["metadata"].get("labels", {}):
        ns = d["metadata"]["namespace"]
        if list(data) != [f"{ns}.yml"]:
            fail.append(f"ConfigMap {ns}/{d['metadata']['name']}: keys {list(data)}, want [{ns}.yml]")
        for k, v in data.items():
            open(f"{out}/rules.d/{k}", "w").write(v)
for f in fail:
    print("FAIL", f)
print(f"{'FAIL' if fail else 'ok  '} rendered DaemonSet, RBAC and tenant ConfigMaps")
sys.exit(1 if fail else 0)
PY

if [ ! -x "$BIN" ]; then
  echo "FAIL $BIN not built (cargo build -p log_pattern_exporter)"; exit 1
fi
if "$BIN" check-rules --config.file="$TMP/platform.yml" "$TMP/rules.d" > "$TMP/check.out" 2>&1; then
  sed 's/^/     /' "$TMP/check.out"
  echo "ok   check-rules on the example's tenant rule sets"
else
  sed 's/^/     /' "$TMP/check.out"
  echo "FAIL check-rules on the example's tenant rule sets"; exit 1
fi
