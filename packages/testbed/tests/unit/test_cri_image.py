"""The sandbox image is a valid OCI image layout that containerd's importer names after our reference."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from vpccni.testbed.cri.image import (
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    NAME_ANNOTATION,
    SandboxImage,
    write_image_layout,
)


@pytest.fixture
def image(tmp_path: Path) -> SandboxImage:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF not really busybox")
    return SandboxImage(
        reference="docker.io/library/test-pause:v1",
        busybox=busybox,
        applets=("sh", "sleep", "ping"),
        architecture="amd64",
    )


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    data = files[f"blobs/{algorithm}/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest, "blob content does not match its digest"
    return data


def test_layout_index_names_the_image_and_points_at_a_valid_manifest(
    image: SandboxImage, tmp_path: Path
) -> None:
    files = _members(write_image_layout(image, tmp_path / "img.tar"))

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    [entry] = index["manifests"]
    assert entry["annotations"][NAME_ANNOTATION] == "docker.io/library/test-pause:v1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_bytes = _blob(files, entry["digest"])
    assert entry["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPE]


def test_config_runs_sleep_and_its_diff_id_is_the_uncompressed_layer(
    image: SandboxImage, tmp_path: Path
) -> None:
    files = _members(write_image_layout(image, tmp_path / "img.tar"))
    entry = json.loads(files["index.json"])["manifests"][0]
    manifest = json.loads(_blob(files, entry["digest"]))
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    layer = gzip.decompress(_blob(files, manifest["layers"][0]["digest"]))

    assert config["config"]["Entrypoint"] == ["/bin/sleep"]
    assert config["config"]["Cmd"] == ["infinity"]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_layer_holds_busybox_and_one_symlink_per_applet(image: SandboxImage, tmp_path: Path) -> None:
    files = _members(write_image_layout(image, tmp_path / "img.tar"))
    entry = json.loads(files["index.json"])["manifests"][0]
    manifest = json.loads(_blob(files, entry["digest"]))
    layer = gzip.decompress(_blob(files, manifest["layers"][0]["digest"]))

    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        busybox = members["bin/busybox"]
        assert busybox.isfile() and busybox.mode & 0o111
        assert tar.extractfile(busybox).read() == image.busybox.read_bytes()  # type: ignore[union-attr]
    links = {name: m.linkname for name, m in members.items() if m.issym()}
    assert links == {"bin/ping": "busybox", "bin/sh": "busybox", "bin/sleep": "busybox"}
    assert {"proc", "sys", "dev", "tmp"} <= {name for name, m in members.items() if m.isdir()}


def test_output_is_reproducible(image: SandboxImage, tmp_path: Path) -> None:
    first = write_image_layout(image, tmp_path / "a.tar").read_bytes()
    second = write_image_layout(image, tmp_path / "b.tar").read_bytes()
    assert first == second


def test_reference_without_tag_is_latest_and_bad_applets_are_refused(
    image: SandboxImage, tmp_path: Path
) -> None:
    untagged = SandboxImage(reference="registry:5000/pause", busybox=image.busybox, architecture="arm64")
    files = _members(write_image_layout(untagged, tmp_path / "img.tar"))
    entry = json.loads(files["index.json"])["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert entry["platform"]["architecture"] == "arm64"

    with pytest.raises(ValueError, match="not a plain file name"):
        write_image_layout(
            SandboxImage(busybox=image.busybox, applets=("../etc/passwd",), architecture="amd64"),
            tmp_path / "bad.tar",
        )
