"""A local pod sandbox ("pause") image, written as an OCI image-layout tar with the standard library only.

No registry is reachable from the testbed, so the CRI plugin must find its sandbox image already imported
(`ctr -n k8s.io images import`). The image holds one gzip layer: a static busybox at /bin/busybox plus applet
symlinks, with `sleep infinity` as the entrypoint standing in for pause. The output is byte-for-byte
deterministic (fixed mtimes, gzip without a timestamp), so the same inputs always give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd's importer names the image after this annotation of the index entry.
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

DEFAULT_REFERENCE = "docker.io/library/vpccni-pause:latest"
# What tests run inside a pod besides the entrypoint: a shell, networking tools and a TCP listener.
DEFAULT_APPLETS = (
    "sh", "sleep", "cat", "echo", "ls", "ip", "ping", "nc", "wget", "hostname", "true", "false",
)  # fmt: skip
_EPOCH = 0  # every file of the layer gets this mtime, for reproducible digests

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class SandboxImage:
    """What goes into the sandbox image and under which name containerd will know it."""

    reference: str = DEFAULT_REFERENCE
    busybox: Path = Path("/bin/busybox")
    applets: tuple[str, ...] = DEFAULT_APPLETS
    entrypoint: tuple[str, ...] = ("/bin/sleep",)
    cmd: tuple[str, ...] = ("infinity",)
    architecture: str = ""  # empty: this machine's, in Go's naming (amd64, arm64)

    def goarch(self) -> str:
        if self.architecture:
            return self.architecture
        machine = platform.machine()
        try:
            return _GOARCH[machine]
        except KeyError:
            raise ValueError(
                f"no OCI architecture known for machine {machine!r}: set SandboxImage(architecture=...)"
            ) from None


@dataclass(frozen=True, kw_only=True)
class Blob:
    """One content-addressed blob of the layout."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def layer_tar(image: SandboxImage) -> bytes:
    """The uncompressed root filesystem: /bin/busybox, a symlink per applet, and empty mount points."""
    binary = image.busybox.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            tar.addfile(_entry(directory, tarfile.DIRTYPE, mode=0o1777 if directory == "tmp" else 0o755))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, mode=0o755, size=len(binary)), io.BytesIO(binary))
        for applet in sorted(set(image.applets) - {"busybox"}):
            if "/" in applet or not applet:
                raise ValueError(f"applet name {applet!r} is not a plain file name")
            link = _entry(f"bin/{applet}", tarfile.SYMTYPE, mode=0o777)
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def image_blobs(image: SandboxImage) -> tuple[Blob, Blob, Blob]:
    """(layer, config, manifest) of the image."""
    raw = layer_tar(image)
    layer = Blob(media_type=LAYER_MEDIA_TYPE, data=gzip.compress(raw, mtime=_EPOCH))
    config = Blob(
        media_type=CONFIG_MEDIA_TYPE,
        data=_json(
            {
                "architecture": image.goarch(),
                "os": "linux",
                "config": {
                    "Entrypoint": list(image.entrypoint),
                    "Cmd": list(image.cmd),
                    "Env": ["PATH=/bin"],
                    "WorkingDir": "/",
                },
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
            }
        ),
    )
    manifest = Blob(
        media_type=MANIFEST_MEDIA_TYPE,
        data=_json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    return layer, config, manifest


def write_image_layout(image: SandboxImage, out: Path) -> Path:
    """Write the image as an OCI image-layout tar at `out` (for `ctr images import`) and return `out`."""
    blobs = image_blobs(image)
    manifest = blobs[-1]
    tag = image.reference.rpartition(":")[2] if ":" in image.reference.rpartition("/")[2] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [
            manifest.descriptor(
                platform={"architecture": image.goarch(), "os": "linux"},
                annotations={NAME_ANNOTATION: image.reference, REF_ANNOTATION: tag},
            )
        ],
    }
    files = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", _json(index)),
        *((f"blobs/sha256/{blob.digest.partition(':')[2]}", blob.data) for blob in blobs),
    ]
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_entry(directory, tarfile.DIRTYPE, mode=0o755))
        for name, data in files:
            tar.addfile(_entry(name, tarfile.REGTYPE, mode=0o644, size=len(data)), io.BytesIO(data))
    return out


def _entry(name: str, kind: bytes, *, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = _EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
