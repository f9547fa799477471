"""containerd's CRI as the real CNI client: a private containerd inside a testbed node namespace, a local
sandbox image, and a small CRI client for pod sandboxes (what kubelet asks of the runtime).

    from vpccni.testbed.cri import Containerd, PodSpec, PortMapping
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
