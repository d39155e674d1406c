#!/usr/bin/env bash
# The local base image for CI and offline builds: Debian bookworm (minbase) with Python 3.11 and venv, made with
# debootstrap from Debian's own mirror, so no container registry is needed. Cached on the machine: the image stays
# in the engine's storage, and the root file system tarball under $CACHE (re-imported if the image was removed).
#
#   images/debian-base.sh [IMAGE]      (default localhost/splatflow-base:bookworm; ENGINE=podman|docker)
#
# Needs root (debootstrap) and debootstrap itself (images/podman-setup.sh installs both engines' tools).
set -euo pipefail
IMAGE=${1:-localhost/splatflow-base:bookworm}
ENGINE=${ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${CACHE:-/var/cache/splatflow}
# what the images need from the OS: Python with venv, CA certificates (pip over HTTPS), OpenMP (torch, pycolmap)
PACKAGES=python3,python3-venv,ca-certificates,libgomp1
TARBALL="$CACHE/debian-$SUITE-minbase.tar"

if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE: present"
  exit 0
fi
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is missing: run images/podman-setup.sh" >&2; exit 3; }
  [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root: run this as root (sudo)" >&2; exit 3; }
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $SUITE ($PACKAGES) from $MIRROR"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; echo "error: debootstrap failed (log: $CACHE/debootstrap.log)" >&2; exit 1; }
  # the same security and update suites a Debian image has; no package lists or caches in the image
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
"$ENGINE" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$IMAGE" >/dev/null
echo "base image $IMAGE: imported from $TARBALL"
