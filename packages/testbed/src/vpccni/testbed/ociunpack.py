"""Unpack an image from an OCI archive (`buildah push ... oci-archive:FILE`) into a root file system, with the
standard library only: to run an image's programs in a chroot without a container runtime (an image for
another architecture runs there under qemu-user through binfmt_misc).

The archive is the image-layout tar: `index.json` names the manifest (the one for `architecture` when it
lists several), the manifest names the config and the layers, which are applied in order with the OCI
whiteouts (`.wh.<name>` deletes a path of the layers below, `.wh..wh..opq` empties a directory). Meant for
images this project built: members may not leave the root, by path or through a symlink already unpacked.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def _blob(archive: tarfile.TarFile, digest: str) -> IO[bytes]:
    algorithm, _, hexdigest = digest.partition(":")
    member = archive.extractfile(f"blobs/{algorithm}/{hexdigest}")
    if member is None:
        raise ValueError(f"the archive has no blob {digest}")
    return member


def _json(archive: tarfile.TarFile, name: str) -> Any:
    member = archive.extractfile(name)
    if member is None:
        raise ValueError(f"the archive has no {name}")
    return json.load(member)


def _manifest(archive: tarfile.TarFile, architecture: str | None) -> dict[str, Any]:
    entries = _json(archive, "index.json")["manifests"]
    if architecture is not None:
        entries = [
            e for e in entries if e.get("platform", {}).get("architecture", architecture) == architecture
        ]
    if len(entries) != 1:
        raise ValueError(f"the archive holds {len(entries)} manifests for {architecture or 'any'}: name one")
    manifest: dict[str, Any] = json.load(_blob(archive, entries[0]["digest"]))
    return manifest


def _inside(root: Path, path: Path) -> Path:
    """`path` (relative to `root`) with its parent resolved, refusing anything that leaves `root`."""
    parent = (root / path).parent.resolve()
    if parent != root and root not in parent.parents:
        raise ValueError(f"layer member {path} leaves the root")
    return parent / path.name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_layer(layer: tarfile.TarFile, root: Path) -> None:
    for member in layer:
        relative = Path(member.name.lstrip("/"))
        if relative.name == OPAQUE:
            directory = _inside(root, relative).parent
            for child in directory.iterdir() if directory.is_dir() else ():
                _remove(child)
            continue
        if relative.name.startswith(WHITEOUT):
            _remove(_inside(root, relative.with_name(relative.name[len(WHITEOUT) :])))
            continue
        target = _inside(root, relative)
        if not (member.isdir() and target.is_dir()):
            _remove(target)
        layer.extract(member, root, set_attrs=not member.issym(), filter="tar")


def unpack(archive_path: Path, root: Path, *, architecture: str | None = None) -> dict[str, Any]:
    """Unpack the image's layers into `root` (created, must be empty) and return its config."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty")
    with tarfile.open(archive_path) as archive:
        manifest = _manifest(archive, architecture)
        config: dict[str, Any] = json.load(_blob(archive, manifest["config"]["digest"]))
        for descriptor in manifest["layers"]:
            with tarfile.open(fileobj=_blob(archive, descriptor["digest"]), mode="r:*") as layer:
                _apply_layer(layer, root)
    return config
