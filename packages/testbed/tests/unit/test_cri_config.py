"""The private containerd's config keeps every movable path under its own directory."""

from __future__ import annotations

import tomllib
from pathlib import Path

from vpccni.testbed.cri.config import ContainerdLayout, render_config

CRI = "io.containerd.grpc.v1.cri"


def _paths(value: object) -> list[str]:
    """Every string in the config that looks like an absolute path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_every_path_is_under_the_base_dir(tmp_path: Path) -> None:
    layout = ContainerdLayout(base=tmp_path / "ctd")
    config = tomllib.loads(render_config(layout, sandbox_image="docker.io/library/p:1"))

    assert config["version"] == 2
    assert config["grpc"]["address"] == str(layout.socket)
    paths = _paths(config)
    assert len(paths) >= 8
    assert all(p.startswith(str(layout.base) + "/") for p in paths), paths


def test_cri_settings_needed_on_this_kind_of_machine(tmp_path: Path) -> None:
    layout = ContainerdLayout(base=tmp_path)
    cri = tomllib.loads(render_config(layout, sandbox_image="docker.io/library/p:1"))["plugins"][CRI]

    assert cri["sandbox_image"] == "docker.io/library/p:1"
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["restrict_oom_score_adj"] is True
    assert cri["disable_apparmor"] is True
    assert cri["cni"] == {"bin_dir": str(layout.cni_bin), "conf_dir": str(layout.cni_conf), "max_conf_num": 1}
    assert cri["containerd"]["runtimes"]["runc"]["options"]["Root"] == str(layout.runc_root)
    assert layout.pod_netns_dir.is_relative_to(layout.state)


def test_given_cni_dirs_are_used_as_they_are(tmp_path: Path) -> None:
    layout = ContainerdLayout(
        base=tmp_path / "ctd", cni_bin_override=tmp_path / "bin", cni_conf_override=tmp_path / "net.d"
    )
    cni = tomllib.loads(render_config(layout))["plugins"][CRI]["cni"]

    assert cni["bin_dir"] == str(tmp_path / "bin")
    assert cni["conf_dir"] == str(tmp_path / "net.d")
    assert tmp_path / "bin" in layout.dirs()


def test_paths_with_quotes_stay_valid_toml(tmp_path: Path) -> None:
    layout = ContainerdLayout(base=tmp_path / 'we"ird\\dir')
    config = tomllib.loads(render_config(layout))
    assert config["root"] == str(layout.root)
