#!/usr/bin/env bash
# `make image-test`: the image `make image` built, checked as the DaemonSet runs it, without a
# container runtime (podman cannot start containers on the build machines):
#
#   - the image: no shell, no package manager, every file root-owned, no set-id bits, nothing
#     group- or world-writable, executables only the six programs and the dynamic loader; the
#     users the DaemonSet's runAsUser values name exist in /etc/passwd and /etc/group; the image's
#     default user is the non-root container's; deploy/ names the tag the build produces;
#   - each container of deploy/kubernetes/base/daemonset.yaml (its command, args, runAsUser,
#     volume mounts) runs inside the image's filesystem (`buildah mount`), read-only as
#     readOnlyRootFilesystem makes it, with its volumes bind-mounted (read-only where the
#     DaemonSet says so) from sandboxes: libvirtd with the test driver on a unix socket, an Open
#     vSwitch sandbox with one dirty flow, a pod log tree and a kern.log (root-owned 0640, as on a
#     host), the ConfigMap's files; as its user with no capability and no_new_privs
#     (deploy/image/run-as.py); on 127.0.0.1 ports; it is scraped, `promtool check metrics` finds
#     nothing, every collector succeeds and each exporter reports what its sandbox holds;
#   - the build is reproducible: building again from the same inputs gives the same image ID, and
#     the OCI archive the build writes holds that image.
#
#   deploy/image/test.sh           (after deploy/image/build.sh; IMAGE_WORK as there)
# Runs in its own mount namespace (unshare -m): its mounts vanish with it. Everything it starts is
# stopped by PID on exit, also on failure.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${IMAGE_WORK:-$REPO/target/image}"
if [ -z "${IMAGE_TEST_IN_NS:-}" ]; then
  exec unshare --mount --propagation private env IMAGE_TEST_IN_NS=1 bash "$0" "$@"
fi
[ -f "$WORK/image.env" ] || { echo "FAIL no $WORK/image.env: make image first"; exit 1; }
WORK="$(cd "$WORK" && pwd)"
IMAGE=$(sed -n 's/^IMAGE=//p' "$WORK/image.env")
IMAGE_ID=$(sed -n 's/^IMAGE_ID=//p' "$WORK/image.env")
VERSION=$(sed -n 's/^VERSION=//p' "$WORK/image.env")
EPOCH=$(sed -n 's/^SOURCE_DATE_EPOCH=//p' "$WORK/image.env")
BIN_DIR=$(sed -n 's/^BIN_DIR=//p' "$WORK/image.env")
for tool in buildah libvirtd ovsdb-server ovs-vswitchd promtool python3 curl; do
  command -v "$tool" >/dev/null || { echo "FAIL $tool not found (scripts/install-deps.sh --image)"; exit 1; }
done
bah() { buildah --storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run" "$@"; }

TMP="$(mktemp -d /tmp/image-test.XXXXXX)"
CTR=cloud-node-exporters-image-test
PIDS=()
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

cleanup() {
  local status=$?
  trap - EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" stop "$TMP/ovs" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  # Mounts first (they hold the working container's tree), then the container.
  for m in $(awk -v t="$TMP/" 'index($2, t) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  bah umount "$CTR" >/dev/null 2>&1 || true
  bah rm "$CTR" >/dev/null 2>&1 || true
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "image-test: $IMAGE $IMAGE_ID"
[ "$(bah images -q --no-trunc "$IMAGE" 2>/dev/null)" = "$IMAGE_ID" ] || {
  echo "FAIL $IMAGE is not the image image.env names: make image"
  exit 1
}
bah rm "$CTR" >/dev/null 2>&1 || true
bah from --name "$CTR" "$IMAGE" >/dev/null
MNT=$(bah mount "$CTR")

# --- the DaemonSet, as the tests below use it --------------------------------------------------
python3 - "$REPO/deploy/kubernetes/base/daemonset.yaml" "$TMP/containers" <<'PY'
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
spec = ds["spec"]["template"]["spec"]
with open(sys.argv[2], "w") as out:
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        mounts = ",".join(f'{m["name"]}:{m["mountPath"]}:{"ro" if m.get("readOnly") else "rw"}'
                          for m in c.get("volumeMounts", []))
        # name image uid gid readOnlyRoot drop-all escalation mounts command args...
        print("|".join([c["name"], c["image"], str(sc.get("runAsUser", "")),
                         str(sc.get("runAsGroup", "")),
                         str(sc.get("readOnlyRootFilesystem", False)).lower(),
                         str(sc.get("capabilities", {}).get("drop") == ["ALL"]).lower(),
                         str(sc.get("allowPrivilegeEscalation", True)).lower(),
                         mounts] + c["command"] + c.get("args", [])), file=out)
PY

# --- the image's files ---------------------------------------------------------------------------
(cd "$MNT" && find . -mindepth 1 | sed 's:^\./:/:' | sort) >"$TMP/files"
shells=$(grep -E '/(sh|bash|dash|ash|ksh|mksh|zsh|csh|tcsh|busybox|toybox)$' "$TMP/files" || true)
[ -z "$shells" ] && ok "no shell in the image" || bad "shells in the image: $shells"
pms=$(grep -E '/(apt|apt-get|dpkg|dpkg-deb|rpm|dnf|yum|apk|pip3?)$|^/var/lib/(dpkg|apt)$' "$TMP/files" || true)
[ -z "$pms" ] && ok "no package manager in the image" || bad "package manager files: $pms"
notroot=$(cd "$MNT" && find . -mindepth 1 \( ! -uid 0 -o ! -gid 0 \) | head)
[ -z "$notroot" ] && ok "every file root:root" || bad "not root-owned: $notroot"
setid=$(cd "$MNT" && find . -mindepth 1 -perm /6000 | head)
[ -z "$setid" ] && ok "no setuid/setgid file" || bad "set-id files: $setid"
writable=$(cd "$MNT" && find . -mindepth 1 ! -type l -perm /022 | head)
[ -z "$writable" ] && ok "nothing group- or world-writable" || bad "writable by others: $writable"
execs=$(cd "$MNT" && find . -type f -perm /111 | sed 's:^\./:/:' | grep -v '^/lib/x86_64-linux-gnu/lib[a-z]*\.so' | sort | tr '\n' ' ')
want="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /usr/bin/ovs-appctl /usr/bin/ovs-ofctl /usr/bin/ovs-vsctl /usr/local/bin/dirty_flow_exporter /usr/local/bin/libvirt_exporter /usr/local/bin/log_pattern_exporter "
[ "$execs" = "$want" ] && ok "executables: the six programs and the loader" || bad "executables: $execs"
unreadable=$(cd "$MNT" && find . -mindepth 1 ! -type l ! -perm -004 | head)
[ -z "$unreadable" ] && ok "every file world-readable (uid 65534 loads the libraries)" || bad "not world-readable: $unreadable"

# Licences: the project's, and every Rust crate compiled into the exporters, as the crate
# sources of this checkout's Cargo.lock give them (the file is regenerated and compared).
notices="$MNT/usr/share/cloud-node-exporters/crate-licenses.txt"
if cmp -s "$REPO/LICENSE" "$MNT/usr/share/cloud-node-exporters/LICENSE" &&
  python3 "$REPO/deploy/image/crate-notices.py" | cmp -s - "$notices" &&
  grep -q '^tikv-jemalloc-sys ' "$notices" && grep -q 'Jason Evans' "$notices" &&
  grep -q '^virt .*' "$notices" && grep -q 'GNU LESSER GENERAL PUBLIC LICENSE' "$notices"; then
  ok "licences: the project's, and the notices of the $(awk 'NR == 2 {print $1}' "$notices" | tr -d '(') Rust crates in the binaries"
else
  bad "licences: LICENSE or crate-licenses.txt missing from the image or not those of this checkout"
fi

user=$(bah inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
[ "$user" = 65534:65534 ] && ok "image user $user" || bad "image user is '$user', not 65534:65534"
lookup() { # file uid-or-gid -> name, from the image's /etc/passwd or /etc/group
  awk -F: -v id="$2" '$3 == id {print $1; exit}' "$MNT/$1"
}
gid_of() { awk -F: -v id="$1" '$3 == id {print $4; exit}' "$MNT/etc/passwd"; }
nonroot_seen=0
while IFS='|' read -r name image uid gid rofs dropall escalate _; do
  [ "$image" = cloud-node-exporters ] || bad "$name runs image $image"
  [ "$rofs" = true ] && [ "$dropall" = true ] && [ "$escalate" = false ] ||
    bad "$name: securityContext not readOnlyRootFilesystem/drop ALL/no escalation"
  # Without runAsGroup the runtime takes the group from the image's /etc/passwd.
  u=$(lookup etc/passwd "$uid"); g=${gid:-$(gid_of "$uid")}
  if [ -n "$u" ] && [ -n "$g" ] && [ -n "$(lookup etc/group "$g")" ]; then
    ok "$name: runAsUser $uid is $u (group $(lookup etc/group "$g")) in the image"
  else
    bad "$name: runAsUser $uid has no /etc/passwd entry with a group in the image"
  fi
  if [ "$uid" != 0 ]; then
    nonroot_seen=1
    [ "$uid:$g" = "$user" ] || bad "$name runs as $uid:$g, the image's default user is $user"
  fi
done <"$TMP/containers"
[ $nonroot_seen = 1 ] || bad "no container of the DaemonSet runs as the image's non-root user"

kust="$REPO/deploy/kubernetes/base/kustomization.yaml"
tag=$(awk '/^images:/ {i = 1} i && $1 == "newTag:" {print $2; exit}' "$kust")
[ "$tag" = "$VERSION" ] && ok "deploy/kubernetes names tag $tag, the tag built" ||
  bad "deploy/kubernetes/base/kustomization.yaml newTag is $tag, the build tags $VERSION"

# --- sandboxes -------------------------------------------------------------------------------------
LV="$TMP/libvirt"
mkdir -p "$LV/sock" "$LV/drivers"
chmod 0755 "$LV/sock"
cat >"$LV/libvirtd.conf" <<CONF
unix_sock_dir = "$LV/sock"
auth_unix_ro = "none"
auth_unix_rw = "none"
CONF
LIBVIRT_DRIVER_DIR="$LV/drivers" libvirtd -f "$LV/libvirtd.conf" -p "$LV/libvirtd.pid" >"$LV/libvirtd.log" 2>&1 &
PIDS+=($!)
NODE_XML="$REPO/exporters/libvirt/demo/node.xml"

mkdir -p "$TMP/ovs" && chmod 0750 "$TMP/ovs"
bash "$REPO/exporters/dirty_flow/demo/ovs-sandbox.sh" start "$TMP/ovs" >"$TMP/ovs-sandbox.log" 2>&1 || {
  cat "$TMP/ovs-sandbox.log"; echo "FAIL the OVS sandbox did not start"; exit 1
}

# A pod log tree and a kern.log as the kubelet and the host leave them: root-owned, 0640 files.
POD="$TMP/pods/openstack_nova-compute-7f9c_a1b2c3d4-0001/nova-compute"
mkdir -p "$POD" "$TMP/varlog" "$TMP/state"
# The exporter starts at the end of files present at its first start (start_at: end): the
# matching lines are appended once it runs (append_logs below).
echo "$(date -u +%FT%T.%NZ) stdout F 2026-01-01 00:00:00.000 7 INFO nova.compute.manager Running periodic task" \
  >"$POD/0.log"
echo "Dec  6 04:00:00 node kernel: [1.0] eth0: link up" >"$TMP/varlog/kern.log"
append_logs() {
  local ts
  ts=$(date -u +%FT%T.%NZ)
  {
    echo "$ts stderr F 2026-01-01 00:00:01.000 7 ERROR nova.compute.manager Instance failed to spawn"
    echo "$ts stderr F Traceback (most recent call last):"
  } >>"$POD/0.log"
  echo "Dec  6 04:00:01 node kernel: [12.3] Out of memory: Killed process 4242 (qemu-kvm) total-vm:1kB" \
    >>"$TMP/varlog/kern.log"
}
chmod 0640 "$POD/0.log" "$TMP/varlog/kern.log"
chmod 0750 "$TMP/pods" "$TMP/pods"/* "$POD" "$TMP/varlog"
chmod 0755 "$TMP/state"

wait_for() { # what, command...: up to 20 s
  local what=$1 _; shift
  for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "FAIL timed out waiting for $what"; return 1
}
wait_for "libvirtd's read-only socket" test -S "$LV/sock/libvirt-sock-ro"

source_of() { # volume name -> the sandbox path mounted for it
  case $1 in
    pod-logs) echo "$TMP/pods" ;;
    log-state) echo "$TMP/state" ;;
    host-var-log) echo "$TMP/varlog" ;;
    config) echo "$REPO/deploy/kubernetes/base/config" ;;
    libvirt-run) echo "$LV/sock" ;;
    host-proc) echo /proc ;;
    ovs-run) echo "$TMP/ovs" ;;
    ovn-run) mkdir -p "$TMP/ovn" && echo "$TMP/ovn" ;;
    *) return 1 ;;
  esac
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bah inspect --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$IMAGE" >"$TMP/image-env"
# The mount points the runtime creates for the volumes, /proc and /dev, in the working container's
# tree (not in the image); then one read-only view of that tree per container.
declare -A PORT PID_OF
while IFS='|' read -r name _ uid gid _ _ _ mounts cmd_args; do
  root="$TMP/root-$name"
  mkdir -p "$root" "$MNT/proc" "$MNT/dev"
  IFS=, read -ra ms <<<"$mounts"
  for m in "${ms[@]}"; do mkdir -p "$MNT$(cut -d: -f2 <<<"$m")"; done
  mount --bind "$MNT" "$root"
  mount -o remount,bind,ro "$root"
  mount -t proc proc "$root/proc" 2>/dev/null || mount --rbind /proc "$root/proc"
  mount -t tmpfs -o mode=0755,nosuid,size=64k tmpfs "$root/dev"
  for d in null zero full random urandom; do
    touch "$root/dev/$d" && mount --bind "/dev/$d" "$root/dev/$d"
  done
  for m in "${ms[@]}"; do
    IFS=: read -r vol path mode <<<"$m"
    src=$(source_of "$vol") || { bad "$name: volume $vol has no sandbox in this test"; continue; }
    mount --bind "$src" "$root$path"
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root$path"; fi
  done
  if touch "$root/written-by-test" 2>/dev/null; then bad "$name: the root filesystem is writable"; fi
  gid=${gid:-$(gid_of "$uid")}
  PORT[$name]=$(free_port)
  IFS='|' read -ra argv <<<"$cmd_args"
  run=()
  for a in "${argv[@]}"; do
    case $a in
      --web.listen-address=*) a="--web.listen-address=127.0.0.1:${PORT[$name]}" ;;
      # The same remote driver and socket as qemu:///system, against the test driver.
      --libvirt.uri=*) a="--libvirt.uri=test+unix://$NODE_XML?socket=/var/run/libvirt/libvirt-sock-ro" ;;
    esac
    run+=("$a")
  done
  python3 "$REPO/deploy/image/run-as.py" "$root" "$uid" "$gid" "$TMP/image-env" -- "${run[@]}" \
    >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
  echo "image-test: started $name (pid $!, uid $uid, 127.0.0.1:${PORT[$name]}): ${run[*]}"
done <"$TMP/containers"

# --- each exporter, scraped --------------------------------------------------------------------
sum_of() { # file, regex on the series -> sum of the values of the series it matches
  awk -v re="$2" '$1 ~ re {s += $2} END {print s + 0}' "$1"
}
# What each exporter must report from its sandbox: prints the finding, fails unless it holds.
shows() { # container name, scrape file
  local f=$2 n up s nova oom
  case $1 in
    libvirt)
      n=$(grep -c '^libvirt_domain_openstack_info{' "$f" || true)
      up=$(sum_of "$f" '^libvirt_up$')
      echo "libvirt_up $up, $n nova domains over libvirtd's read-only socket"
      [ "$up" = 1 ] && [ "$n" -gt 0 ] ;;
    dirty-flow)
      s=$(sum_of "$f" '^ovs_dirty_flows[{].*check="missing_port"')
      echo "ovs-ofctl in the image dumps the sandbox: ovs_dirty_flows{check=\"missing_port\"} $s (want 1)"
      [ "$s" = 1 ] ;;
    log-pattern)
      nova=$(sum_of "$f" '^log_pattern_matches_total[{].*rule="nova_error"')
      oom=$(sum_of "$f" '^log_pattern_matches_total[{].*rule="kernel_oom_killer".*process="qemu-kvm"')
      echo "root-owned 0640 pod log and kern.log read: nova_error $nova, kernel_oom_killer{process=\"qemu-kvm\"} $oom (want 1, 1)"
      [ "$nova" = 1 ] && [ "$oom" = 1 ] ;;
    *) echo "no check for container $1"; return 1 ;;
  esac
}

for name in $(cut -d'|' -f1 "$TMP/containers"); do
  pid=${PID_OF[$name]} port=${PORT[$name]}
  up=0
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready" 2>/dev/null; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ $up = 0 ]; then
    bad "$name did not become ready; its log:"; tail -n 20 "$TMP/$name.log"; continue
  fi
  st=/proc/$pid/status
  uid=$(awk '$1 == "Uid:" {print $2 "," $3 "," $4 "," $5}' "$st")
  caps=$(awk '$1 ~ /^Cap(Inh|Prm|Eff|Bnd|Amb):$/ {printf "%s%s ", $1, $2}' "$st")
  nnp=$(awk '$1 == "NoNewPrivs:" {print $2}' "$st")
  want_uid=$(awk -F'|' -v n="$name" '$1 == n {print $3}' "$TMP/containers")
  [ "$uid" = "$want_uid,$want_uid,$want_uid,$want_uid" ] && [ "$nnp" = 1 ] &&
    [ "$caps" = "CapInh:0000000000000000 CapPrm:0000000000000000 CapEff:0000000000000000 CapBnd:0000000000000000 CapAmb:0000000000000000 " ] &&
    [ "$(readlink "/proc/$pid/root")" = "$TMP/root-$name" ] &&
    ok "$name runs in the image as uid $want_uid, no capabilities, no_new_privs" ||
    bad "$name process: uid $uid, $caps NoNewPrivs $nnp, root $(readlink "/proc/$pid/root")"
  [ "$name" = log-pattern ] && append_logs
  # Scraped until what the sandbox holds shows (the log exporter tails asynchronously), at most
  # 20 s; the last scrape is the one checked.
  f="$TMP/$name.prom"
  for _ in $(seq 40); do
    curl -fsS "http://127.0.0.1:$port/metrics" >"$f" 2>/dev/null || : >"$f"
    shows "$name" "$f" >/dev/null && break
    sleep 0.5
  done
  if [ ! -s "$f" ]; then bad "$name: scrape failed"; continue; fi
  if lint=$(promtool check metrics <"$f" 2>&1); then
    ok "$name: promtool check metrics ($(grep -vc '^#' "$f") series)"
  else
    bad "$name: promtool check metrics: $lint"
  fi
  failed=$(grep -E '^[a-z_]+_scrape_collector_success\{' "$f" | awk '$2 != 1' || true)
  total=$(grep -cE '^[a-z_]+_scrape_collector_success\{' "$f" || true)
  [ "$total" -gt 0 ] && [ -z "$failed" ] && ok "$name: all $total collectors succeed" ||
    bad "$name: collectors failing: ${failed:-none reported}"
  if msg=$(shows "$name" "$f"); then ok "$name: $msg"; else bad "$name: $msg"; fi
done

# --- reproducible: the same inputs give the same image ---------------------------------------
REPRO=localhost/cloud-node-exporters:reproducibility-check
if IMAGE_NAME=$REPRO IMAGE_ARCHIVE=0 IMAGE_ENV="$TMP/repro.env" SOURCE_DATE_EPOCH="$EPOCH" \
  bash "$REPO/deploy/image/build.sh" "$BIN_DIR" >"$TMP/repro.log" 2>&1; then
  id2=$(sed -n 's/^IMAGE_ID=//p' "$TMP/repro.env")
  [ "$id2" = "$IMAGE_ID" ] && ok "a second build gives the same image ID" ||
    bad "a second build gives image $id2, not $IMAGE_ID"
  bah rmi "$REPRO" >/dev/null 2>&1 || true
else
  cat "$TMP/repro.log"; bad "the second build failed"
fi

ARCHIVE="$WORK/cloud-node-exporters-$VERSION.oci.tar"
if [ -f "$ARCHIVE" ]; then
  bah2() { buildah --storage-driver vfs --root "$TMP/archive-storage" --runroot "$TMP/archive-run" "$@"; }
  if bah2 pull -q "oci-archive:$ARCHIVE" >/dev/null 2>&1 &&
    [ "$(bah2 images -q --no-trunc)" = "$IMAGE_ID" ]; then
    ok "the OCI archive holds the same image"
  else
    bad "$ARCHIVE does not hold $IMAGE_ID"
  fi
  bah2 rmi -a -f >/dev/null 2>&1 || true
fi

echo "image-test: image $(du -sb "$MNT" | awk '{printf "%.1f MiB", $1 / 1048576}') unpacked"
if [ $fail != 0 ]; then
  for name in $(cut -d'|' -f1 "$TMP/containers"); do
    echo "--- the end of $name's log"; tail -n 15 "$TMP/$name.log" 2>/dev/null || true
  done
  echo "image-test: FAILED"
else
  echo "image-test: all checks passed"
fi
exit $fail
