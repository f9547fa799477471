"""containerd's CRI as the real CNI client: a private containerd inside a testbed node namespace, a local
sandbox image, and a small CRI client for pod sandboxes (what kubelet asks of the runtime).

    with Containerd(netns_path=node.netns_path, cni_conf_dir=runner.confdir) as containerd:
        containerd.install_chain(shim, runner.chained())
        containerd.wait_network_ready(network="aws-cni")
        with containerd.client() as cri:
            sandbox = cri.status(cri.run_pod(PodSpec(name="web", port_mappings=(PortMapping(...),))))
            podnet.ping(sandbox.netns_path, other_ip)

| module | what |
|---|---|
| `daemon` | `Containerd`: start in a node namespace (`nsenter --net`), PID, plugins, conflist, stop |
| `config` | `ContainerdLayout` (every path under one directory) and `render_config` (config.toml) |
| `image` | the sandbox ("pause") image as an OCI image-layout tar: static busybox, `sleep infinity` |
| `client` | `CriClient`: Version, Status, RunPodSandbox, PodSandboxStatus, Stop/RemovePodSandbox, List |
| `podnet` | ping, addresses and TCP echo inside a pod's netns, addressed by its path |
| `leftovers` | removing what a harness left (processes by PID, mounts, dirs, cgroups); stale sweep |
"""

from .client import CriClient, CriError, PodSandbox, PodSpec, PortMapping, PortProtocol
from .config import ContainerdLayout, render_config
from .daemon import Containerd, ContainerdError
from .image import SandboxImage, write_image_layout

__all__ = [
    "Containerd",
    "ContainerdError",
    "ContainerdLayout",
    "CriClient",
    "CriError",
    "PodSandbox",
    "PodSpec",
    "PortMapping",
    "PortProtocol",
    "SandboxImage",
    "render_config",
    "write_image_layout",
]
