"""Where a private containerd keeps everything, and the config.toml that keeps it there.

Every path containerd 1.6 lets us move goes under one directory: metadata (`root`), runtime state
(`state`, including the pod netns mounts, `netns_mounts_under_state_dir`), both sockets, runc's state
(`Root`), the `opt` plugin's install dir, and the CNI plugin and config dirs. What it cannot move (shim
sockets in /run/containerd/s, the cgroups named by a pod's cgroup parent) the daemon harness removes on stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .image import DEFAULT_REFERENCE

# Plugins the harness never needs: skipping them makes start-up quicker and keeps them from probing the host.
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


@dataclass(frozen=True, kw_only=True)
class ContainerdLayout:
    """The paths of one private containerd, all derived from `base` unless the CNI dirs are given."""

    base: Path
    cni_bin_override: Path | None = None
    cni_conf_override: Path | None = None

    @property
    def config_file(self) -> Path:
        return self.base / "config.toml"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def ttrpc_socket(self) -> Path:
        return self.base / "containerd.sock.ttrpc"

    @property
    def runc_root(self) -> Path:
        return self.base / "runc"

    @property
    def opt(self) -> Path:
        return self.base / "opt"

    @property
    def log_file(self) -> Path:
        return self.base / "containerd.log"

    @property
    def cni_bin(self) -> Path:
        return self.cni_bin_override or self.base / "cni-bin"

    @property
    def cni_conf(self) -> Path:
        return self.cni_conf_override or self.base / "net.d"

    @property
    def pod_netns_dir(self) -> Path:
        """Where the CRI plugin mounts each pod's network namespace (`netns_mounts_under_state_dir`)."""
        return self.state / "io.containerd.grpc.v1.cri" / "netns"

    def dirs(self) -> tuple[Path, ...]:
        """Every directory containerd expects to exist before it starts."""
        return (self.base, self.root, self.state, self.runc_root, self.opt, self.cni_bin, self.cni_conf)


def render_config(layout: ContainerdLayout, *, sandbox_image: str = DEFAULT_REFERENCE) -> str:
    """containerd's config.toml (version 2) for `layout`."""

    def q(value: object) -> str:
        # TOML basic strings accept JSON string escapes.
        return json.dumps(str(value))

    cri = '[plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f"root = {q(layout.root)}",
        f"state = {q(layout.state)}",
        f"disabled_plugins = [{', '.join(q(p) for p in DISABLED_PLUGINS)}]",
        "",
        "[grpc]",
        f"  address = {q(layout.socket)}",
        "[ttrpc]",
        f"  address = {q(layout.ttrpc_socket)}",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {q(layout.opt)}",
        "",
        f"{cri}]",
        f"  sandbox_image = {q(sandbox_image)}",
        # Pod netns mounts stay under our state dir instead of /run/netns, out of `ip netns list`.
        "  netns_mounts_under_state_dir = true",
        # The VM withholds CAP_SYS_RESOURCE: without this runc fails to create any container.
        "  restrict_oom_score_adj = true",
        # Never load an AppArmor profile into the host's kernel.
        "  disable_apparmor = true",
        f"{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"{cri}.containerd.runtimes.runc.options]",
        f"  Root = {q(layout.runc_root)}",
        f"{cri}.cni]",
        f"  bin_dir = {q(layout.cni_bin)}",
        f"  conf_dir = {q(layout.cni_conf)}",
        "  max_conf_num = 1",
        "",
    ]
    return "\n".join(lines)
