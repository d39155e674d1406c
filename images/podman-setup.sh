#!/usr/bin/env bash
# Podman for the local image build and the containerised pipeline run (CI: .ci/run), on Debian as root:
# Debian's podman, buildah and runc, debootstrap for the local base image (images/debian-base.sh), and two engine
# settings in /etc/containers/containers.conf.d/50-splatflow.conf:
#   - runtime "runc": Debian's default crun fails on hosts with hybrid (v1) cgroups;
#   - default ulimits nofile/nproc 1024: where raising rlimits is refused, podman's defaults (higher limits)
#     make every container start fail.
# Idempotent: a second run changes nothing.
set -euo pipefail
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
missing=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null
fi
conf=/etc/containers/containers.conf.d/50-splatflow.conf
want='# splatflow (images/podman-setup.sh): runc and fixed ulimits, so containers start on this host
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  $SUDO mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
  echo "wrote $conf"
fi
# fail here, not in the middle of a build, if containers cannot start
$SUDO podman info --format '{{.Host.OCIRuntime.Name}}' | grep -qx runc \
  || { echo "error: podman does not use runc after writing $conf" >&2; exit 1; }
echo "podman $(podman version --format '{{.Client.Version}}') ready (runtime runc)"
