#!/usr/bin/env bash
# Build the aws-node image on this machine without a Docker engine or a container registry:
#
#   bash deploy/image/build.sh            (nox -s image)     -> out/vpccni-aws-node-<version>.oci.tar
#   bash deploy/image/build.sh --arch arm64                   -> out/vpccni-aws-node-<version>-arm64.oci.tar
#
# 1. wheels:  scripts/build_wheels.py dist (as `nox -s build`)
# 2. context: deploy/image/stage.py out/image-context (wheels + dependencies for the architecture, the
#             aws-cni trampoline's source, conflist, eni-max-pods)
# 3. base:    a minimal Debian 12 root file system made with debootstrap from the Debian mirror, committed
#             as localhost/vpccni-base:bookworm (once; reused while it exists)
# 4. image:   buildah bud -f Containerfile --build-arg BASE=localhost/vpccni-base:bookworm: the same file a
#             Docker or Podman user builds, so the two cannot drift
# 5. archive: buildah push to an OCI archive (load it with `podman load`, `ctr images import` or `skopeo copy`)
#
# All buildah state lives under out/buildah (never the machine's /var/lib/containers). Needs root and the
# Debian packages buildah and debootstrap.
# Options: --stage-only runs steps 1-2 only (for docker or podman builds).
#          --arch amd64|arm64 (default: this machine's). Another architecture than the machine's runs the
#          image's programs (debootstrap's second stage, apt, pip, the aws-cni build) under qemu-user-static
#          through binfmt_misc; its names get a -<arch> suffix (context, base, tag, archive).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${VPCCNI_IMAGE_OUT:-$ROOT/out}
PY=${PYTHON:-$ROOT/.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/deploy/charts/aws-vpc-cni/Chart.yaml")
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')
ARCH=$HOST_ARCH
STAGE_ONLY=0
while (( $# )); do
    case $1 in
        --stage-only) STAGE_ONLY=1 ;;
        --arch) ARCH=${2:?--arch needs amd64 or arm64}; shift ;;
        --arch=*) ARCH=${1#--arch=} ;;
        *) echo "usage: build.sh [--stage-only] [--arch amd64|arm64]" >&2; exit 2 ;;
    esac
    shift
done
case $ARCH in
    amd64) QEMU_ARCH=x86_64 ;;
    arm64) QEMU_ARCH=aarch64 ;;
    *) echo "build.sh: unsupported architecture $ARCH (amd64 or arm64)" >&2; exit 2 ;;
esac
SUFFIX=""
[[ $ARCH != "$HOST_ARCH" ]] && SUFFIX=-$ARCH
IMAGE=localhost/vpccni/aws-node:$VERSION$SUFFIX
BASE=localhost/vpccni-base:bookworm$SUFFIX
CONTEXT=$OUT/image-context$SUFFIX
ARCHIVE=$OUT/vpccni-aws-node-$VERSION$SUFFIX.oci.tar

log() { printf '[image] %s\n' "$*" >&2; }

log "1/5 wheels"
"$PY" "$ROOT/scripts/build_wheels.py" "$ROOT/dist"
log "2/5 build context"
"$PY" "$ROOT/deploy/image/stage.py" "$CONTEXT" --wheels "$ROOT/dist" --arch "$ARCH"
if (( STAGE_ONLY )); then
    log "staged $CONTEXT; build it with: docker build --platform linux/$ARCH -f $CONTEXT/Containerfile $CONTEXT"
    exit 0
fi

if [[ $(id -u) != 0 ]]; then
    echo "build.sh needs root (debootstrap, buildah); run it as root or use --stage-only" >&2
    exit 1
fi
for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y buildah debootstrap" >&2; exit 1; }
done
if [[ -n $SUFFIX ]]; then
    # The kernel must hand $ARCH programs to qemu, also inside the build's chroots (flag F: the interpreter
    # is opened when registered, not looked up in the chroot).
    handler=/proc/sys/fs/binfmt_misc/qemu-$QEMU_ARCH
    if ! grep -qx enabled "$handler" 2>/dev/null || ! grep -q '^flags:.*F' "$handler"; then
        echo "build.sh: building for $ARCH on $HOST_ARCH needs qemu-user-static registered with binfmt_misc" \
             "($handler is missing or not enabled with flag F). As root: apt-get install qemu-user-static" \
             "binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc;" \
             "update-binfmts --enable qemu-$QEMU_ARCH (scripts/bootstrap.sh does this)" >&2
        exit 1
    fi
fi

STORE=(--root "$OUT/buildah/root" --runroot "$OUT/buildah/run" --storage-driver "${STORAGE_DRIVER:-vfs}")
bh() { buildah "${STORE[@]}" "$@"; }

if ! bh inspect --type image "$BASE" >/dev/null 2>&1; then
    log "3/5 base root file system (debootstrap bookworm $ARCH from $MIRROR)"
    rootfs="$OUT/debootstrap$SUFFIX"
    rm -rf "$rootfs"
    debootstrap --arch="$ARCH" --variant=minbase bookworm "$rootfs" "$MIRROR"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # debootstrap lists only bookworm main; add updates and security as the Debian images have them.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" "${MIRROR%/debian}/debian" > "$rootfs/etc/apt/sources.list"
    ctr=$(bh from scratch)
    mnt=$(bh mount "$ctr")
    cp -a "$rootfs"/. "$mnt"/
    bh umount "$ctr"
    bh config --arch "$ARCH" --os linux --cmd /bin/bash \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    bh commit --rm "$ctr" "$BASE"
    rm -rf "$rootfs"
else
    log "3/5 base $BASE exists"
fi

log "4/5 buildah bud $IMAGE"
bh bud --isolation chroot --network host --layers=false --platform "linux/$ARCH" --build-arg "BASE=$BASE" \
    -f "$CONTEXT/Containerfile" -t "$IMAGE" "$CONTEXT"

log "5/5 $ARCHIVE"
rm -f "$ARCHIVE"
bh push "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
log "done: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
