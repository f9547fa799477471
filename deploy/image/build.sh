#!/usr/bin/env bash
# Build the aws-node image on this machine without a Docker engine or a container registry:
#
#   bash deploy/image/build.sh            (nox -s image)     -> out/vpccni-aws-node-<version>.oci.tar
#
# 1. wheels:  scripts/build_wheels.py dist (as `nox -s build`)
# 2. context: deploy/image/stage.py out/image-context (wheels + dependencies, aws-cni, conflist, eni-max-pods)
# 3. base:    a minimal Debian 12 root file system made with debootstrap from the Debian mirror, committed
#             as localhost/vpccni-base:bookworm (once; reused while it exists)
# 4. image:   buildah bud -f Containerfile --build-arg BASE=localhost/vpccni-base:bookworm: the same file a
#             Docker or Podman user builds, so the two cannot drift
# 5. archive: buildah push to an OCI archive (load it with `podman load`, `ctr images import` or `skopeo copy`)
#
# All buildah state lives under out/buildah (never the machine's /var/lib/containers). Needs root and the
# Debian packages buildah and debootstrap.
# Option: --stage-only runs steps 1-2 only (for docker or podman builds).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${VPCCNI_IMAGE_OUT:-$ROOT/out}
PY=${PYTHON:-$ROOT/.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/deploy/charts/aws-vpc-cni/Chart.yaml")
IMAGE=localhost/vpccni/aws-node:$VERSION
BASE=localhost/vpccni-base:bookworm
ARCHIVE=$OUT/vpccni-aws-node-$VERSION.oci.tar
STAGE_ONLY=0
[[ ${1:-} == --stage-only ]] && STAGE_ONLY=1

log() { printf '[image] %s\n' "$*" >&2; }

log "1/5 wheels"
"$PY" "$ROOT/scripts/build_wheels.py" "$ROOT/dist"
log "2/5 build context"
"$PY" "$ROOT/deploy/image/stage.py" "$OUT/image-context" --wheels "$ROOT/dist"
if (( STAGE_ONLY )); then
    log "staged $OUT/image-context; build it with: docker build -f $OUT/image-context/Containerfile $OUT/image-context"
    exit 0
fi

if [[ $(id -u) != 0 ]]; then
    echo "build.sh needs root (debootstrap, buildah); run it as root or use --stage-only" >&2
    exit 1
fi
for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y buildah debootstrap" >&2; exit 1; }
done

STORE=(--root "$OUT/buildah/root" --runroot "$OUT/buildah/run" --storage-driver "${STORAGE_DRIVER:-vfs}")
bh() { buildah "${STORE[@]}" "$@"; }

if ! bh inspect --type image "$BASE" >/dev/null 2>&1; then
    log "3/5 base root file system (debootstrap bookworm from $MIRROR)"
    rootfs="$OUT/debootstrap"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # debootstrap lists only bookworm main; add updates and security as the Debian images have them.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" "${MIRROR%/debian}/debian" > "$rootfs/etc/apt/sources.list"
    ctr=$(bh from scratch)
    mnt=$(bh mount "$ctr")
    cp -a "$rootfs"/. "$mnt"/
    bh umount "$ctr"
    bh config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    bh commit --rm "$ctr" "$BASE"
    rm -rf "$rootfs"
else
    log "3/5 base $BASE exists"
fi

log "4/5 buildah bud $IMAGE"
bh bud --isolation chroot --network host --layers=false --build-arg "BASE=$BASE" \
    -f "$OUT/image-context/Containerfile" -t "$IMAGE" "$OUT/image-context"

log "5/5 $ARCHIVE"
rm -f "$ARCHIVE"
bh push "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
log "done: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
