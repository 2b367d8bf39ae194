#!/usr/bin/env bash
# Builds the container image the DaemonSet runs (`make image`), with buildah and no registry:
# a single layer holding the three release binaries (debug line tables stripped), ovs-ofctl,
# ovs-vsctl and ovs-appctl (dirty_flow_exporter runs them inside the container), exactly the
# shared libraries the dynamic loader resolves for these six programs, the Debian copyright files of the packages they come from, the
# project's licence and the licence notices of the Rust crates in the binaries, and an
# /etc/passwd and /etc/group with root and the DaemonSet's non-root user, nobody/nogroup (65534).
# No shell, no
# package manager, no CA certificates (the exporters make no outgoing TLS connections).
#
#   deploy/image/build.sh [BIN_DIR]     (BIN_DIR default target/release)
#
# The libraries come from the Debian packages pinned in deploy/image/packages.lock (version and
# .deb checksum; regenerate with deploy/image/lock.sh), downloaded with apt-get and unpacked with
# dpkg-deb, never from this machine's /usr. The same binaries, lock and SOURCE_DATE_EPOCH give the
# same image ID: file lists are sorted, every file time is SOURCE_DATE_EPOCH (buildah commit
# --timestamp; default: the time of the last git commit), ownership is root:root.
#
# Environment (all optional):
#   IMAGE_WORK=DIR    work dir: .deb cache, staging trees, buildah's vfs storage (default
#                     target/image); the image lives in that storage, not in the machine's own
#   IMAGE_NAME=NAME   image name and tag (default localhost/cloud-node-exporters:<workspace version>)
#   IMAGE_ARCHIVE=0   skip writing the OCI archive target/image/cloud-node-exporters-<version>.oci.tar
#   IMAGE_ENV=FILE    where to record the image (default target/image/image.env, which
#                     deploy/image/test.sh reads)
# Prints the image ID and size.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$(cd "${1:-$REPO/target/release}" && pwd)"
WORK="${IMAGE_WORK:-$REPO/target/image}"
LOCK="$REPO/deploy/image/packages.lock"
VERSION=$(awk '/^\[workspace.package\]/ {w = 1; next} /^\[/ {w = 0}
  w && $1 == "version" {gsub(/"/, "", $3); print $3; exit}' "$REPO/Cargo.toml")
[ -n "$VERSION" ] || { echo "image: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
IMAGE="${IMAGE_NAME:-localhost/cloud-node-exporters:$VERSION}"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)
fi
EXPORTERS=(log_pattern_exporter libvirt_exporter dirty_flow_exporter)
# dirty_flow_exporter runs these by name (--ovs.ofctl-path, --ovs.vsctl-path, --ovs.appctl-path
# for ovn-controller's connection status): PATH finds them.
OVS_TOOLS=(usr/bin/ovs-ofctl usr/bin/ovs-vsctl usr/bin/ovs-appctl)
MULTIARCH=x86_64-linux-gnu

for b in "${EXPORTERS[@]}"; do
  [ -x "$BIN/$b" ] || { echo "image: $BIN/$b not built (make release)" >&2; exit 1; }
done
for tool in buildah objcopy apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "image: $tool not found (scripts/install-deps.sh --image)" >&2; exit 1; }
done
mkdir -p "$WORK/debs"
WORK="$(cd "$WORK" && pwd)"
bah() { buildah --storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run" "$@"; }

# --- the pinned .debs, downloaded once into the cache and checked ----------------------------
mapfile -t LOCKED < <(grep -v '^#' "$LOCK" | grep .)
need=()
for line in "${LOCKED[@]}"; do
  read -r name ver sum <<<"$line"
  if ! echo "$sum  $WORK/debs/$sum.deb" | sha256sum -c --status 2>/dev/null; then need+=("$name=$ver"); fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "image: downloading ${#need[@]} Debian packages" >&2
  rm -rf "$WORK/debs/new" && mkdir -p "$WORK/debs/new"
  if ! (cd "$WORK/debs/new" && apt-get download -qq "${need[@]}" 2>/dev/null); then
    # A fresh machine may have no package lists yet.
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    (cd "$WORK/debs/new" && apt-get download -qq "${need[@]}") || {
      echo "image: a pinned version is gone from the mirror: run deploy/image/lock.sh" >&2
      exit 1
    }
  fi
  for deb in "$WORK/debs/new"/*.deb; do
    mv "$deb" "$WORK/debs/$(sha256sum "$deb" | cut -d' ' -f1).deb"
  done
  rmdir "$WORK/debs/new"
fi
STAGE="$WORK/stage"
rm -rf "$STAGE" "$WORK/files" && mkdir -p "$STAGE" "$WORK/files"
for line in "${LOCKED[@]}"; do
  read -r name ver sum <<<"$line"
  deb="$WORK/debs/$sum.deb"
  echo "$sum  $deb" | sha256sum -c --status || {
    echo "image: $name $ver: the .deb does not match the checksum in $LOCK" >&2
    exit 1
  }
  dpkg-deb -x "$deb" "$STAGE"
  # Which package ships which path, for the copyright files and the unused-package check.
  dpkg-deb -c "$deb" | awk '{print $6}' | sed 's:^\./:/:' >"$WORK/files/$name"
done

# --- the six programs and what the dynamic loader resolves for them -------------------------
install -d -m 0755 "$STAGE/usr/local/bin"
# Without the line tables the release profile keeps (a quarter of the size; symbols stay, so a
# backtrace still names functions).
for b in "${EXPORTERS[@]}"; do
  objcopy --strip-debug "$BIN/$b" "$STAGE/usr/local/bin/$b"
  chmod 0755 "$STAGE/usr/local/bin/$b"
done
LDSO=/lib64/ld-linux-x86-64.so.2
LIBPATH="$STAGE/lib/$MULTIARCH:$STAGE/usr/lib/$MULTIARCH"
paths=("$LDSO")
for prog in "${EXPORTERS[@]/#/usr/local/bin/}" "${OVS_TOOLS[@]}"; do
  paths+=("/$prog")
  out=$("$STAGE$LDSO" --library-path "$LIBPATH" --list "$STAGE/$prog") || {
    echo "image: the loader cannot resolve $prog: $out" >&2
    exit 1
  }
  while read -r lib; do
    case $lib in
      "$STAGE"/*) paths+=("${lib#"$STAGE"}") ;;
      "$LDSO" | /lib64/ld-linux-x86-64.so.2) ;;
      *) echo "image: $prog needs $lib, which no pinned package ships (deploy/image/lock.sh)" >&2; exit 1 ;;
    esac
  done < <(awk '$2 == "=>" {if ($3 == "not") {print "not found: " $1} else {print $3}}' <<<"$out")
done
if grep -q '^not found' <<<"$(printf '%s\n' "${paths[@]}")"; then
  printf '%s\n' "${paths[@]}" | grep '^not found' >&2
  exit 1
fi

ROOTFS="$WORK/rootfs"
rm -rf "$ROOTFS" && mkdir -p "$ROOTFS"
# Copies a path and, for a symlink, the chain it points through (libvirt.so.0 -> libvirt.so.0.9000.0).
copy_path() {
  local p=$1 target n=0
  while :; do
    [ -e "$STAGE$p" ] || [ -L "$STAGE$p" ] || { echo "image: $p missing from the staged packages" >&2; exit 1; }
    (cd "$STAGE" && cp -P --preserve=mode --parents ".$p" "$ROOTFS/")
    [ -L "$STAGE$p" ] || return 0
    target=$(readlink "$STAGE$p")
    case $target in /*) p=$target ;; *) p=$(dirname "$p")/$target ;; esac
    p=$(realpath -m -s "$p")
    n=$((n + 1)); [ $n -lt 20 ] || { echo "image: symlink loop at $1" >&2; exit 1; }
  done
}
for p in $(printf '%s\n' "${paths[@]}" | sort -u); do copy_path "$p"; done

# The packages those files come from, and each one's copyright file.
list_rootfs() { (cd "$ROOTFS" && find . ! -type d | sed 's:^\./:/:' | sort) >"$WORK/rootfs.list"; }
list_rootfs
used=()
for line in "${LOCKED[@]}"; do
  read -r name _ _ <<<"$line"
  if grep -qxF -f "$WORK/files/$name" "$WORK/rootfs.list"; then used+=("$name"); fi
done
for name in "${used[@]}"; do
  # A doc directory may be a symlink to another package's (libgcc-s1 -> gcc-12-base): copy the file.
  doc=$(realpath -e "$STAGE/usr/share/doc/$name/copyright") && [ "${doc#"$STAGE"/}" != "$doc" ] || {
    echo "image: $name has no copyright file in the staged packages" >&2
    exit 1
  }
  copy_path "${doc#"$STAGE"}"
done
list_rootfs
for line in "${LOCKED[@]}"; do
  read -r name _ _ <<<"$line"
  if ! grep -qxF -f "$WORK/files/$name" "$WORK/rootfs.list"; then
    echo "image: $name is locked but ships nothing the image holds: run deploy/image/lock.sh" >&2
    exit 1
  fi
done

# Users: root (log_pattern and dirty_flow run as uid 0 with no capabilities) and the image's
# default user nobody/nogroup 65534 (libvirt_exporter: libvirtd accepts only a uid and gid the
# host knows, and every host knows 65534). Their shell does not exist in the image.
install -d -m 0755 "$ROOTFS/etc" "$ROOTFS/usr/share/cloud-node-exporters"
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$ROOTFS/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$ROOTFS/etc/group"
# libvirt's client looks its user up (getpwuid): without nsswitch.conf glibc would ask the
# `compat` module, which the image does not hold, and the lookup fails.
printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' >"$ROOTFS/etc/nsswitch.conf"
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" "$ROOTFS/etc/nsswitch.conf"
grep -v '^#' "$LOCK" >"$ROOTFS/usr/share/cloud-node-exporters/packages.lock"
# The project's licence, and the notices of the Rust crates compiled into the exporters
# (deploy/image/crate-notices.py, from Cargo.lock and the crate sources).
cp "$REPO/LICENSE" "$ROOTFS/usr/share/cloud-node-exporters/LICENSE"
python3 "$REPO/deploy/image/crate-notices.py" >"$ROOTFS/usr/share/cloud-node-exporters/crate-licenses.txt"
chmod 0644 "$ROOTFS/usr/share/cloud-node-exporters/"{packages.lock,LICENSE,crate-licenses.txt}
# Modes independent of the umask and the packages' build machines: directories 0755, no set-id bits.
find "$ROOTFS" -type d -exec chmod 0755 {} +
find "$ROOTFS" -type f -perm /6000 -exec chmod ug-s {} +

# --- the image ---------------------------------------------------------------------------------
CTR=cloud-node-exporters-build
bah rm "$CTR" >/dev/null 2>&1 || true
bah from --name "$CTR" scratch >/dev/null
trap 'bah rm "$CTR" >/dev/null 2>&1 || true' EXIT
bah copy --chown 0:0 "$CTR" "$ROOTFS" / >/dev/null
bah config --user 65534:65534 --env PATH=/usr/local/bin:/usr/bin \
  --entrypoint '["/usr/local/bin/libvirt_exporter"]' \
  --port 9851 --port 9177 --port 9852 \
  --label org.opencontainers.image.title=cloud-node-exporters \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --created-by "deploy/image/build.sh (binaries, deploy/image/packages.lock)" "$CTR"
old_id=$(bah images -q --no-trunc "$IMAGE" 2>/dev/null || true)
bah commit -q --timestamp "$SOURCE_DATE_EPOCH" --rm "$CTR" "$IMAGE" >/dev/null
trap - EXIT
# A rebuild retags; the image it replaced is removed so repeated runs keep one copy.
new_id=$(bah images -q --no-trunc "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then bah rmi "$old_id" >/dev/null 2>&1 || true; fi

size=$(du -sb "$ROOTFS" | cut -f1)
{
  echo "IMAGE=$IMAGE"
  echo "IMAGE_ID=$new_id"
  echo "VERSION=$VERSION"
  echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
  echo "ROOTFS_BYTES=$size"
  echo "BIN_DIR=$BIN"
} >"${IMAGE_ENV:-$WORK/image.env}"
if [ "${IMAGE_ARCHIVE:-1}" != 0 ]; then
  ARCHIVE="$WORK/cloud-node-exporters-$VERSION.oci.tar"
  rm -f "$ARCHIVE"
  bah push -q "$IMAGE" "oci-archive:$ARCHIVE:${IMAGE##*/}" >/dev/null
  echo "image: $ARCHIVE ($(du -m "$ARCHIVE" | cut -f1) MiB)"
fi
echo "image: $IMAGE $new_id ($((size / 1024 / 1024)) MiB unpacked, $(wc -l <"$WORK/rootfs.list") files)"
# The staging trees are rebuilt every run; the .deb cache and buildah's storage stay.
rm -rf "$STAGE" "$ROOTFS"
