"""`aws-k8s-agent --version`: what this agent is, and that everything it runs on loads on this machine.

It prints the version, the interpreter and the machine, then imports the daemon and the modules it loads
only later (the EC2 client, netlink, the Kubernetes client) and builds one message of the gRPC protocol,
naming the native extensions that loaded. A wheel built for another architecture or C library fails here,
with the module's name, instead of on a node at its first pod: the image build and its arm64 test run it.
"""

from __future__ import annotations

import importlib
import platform
import sys
import sysconfig
import traceback
from collections.abc import Callable

from vpccni.cniplugin.version import VERSION

# What the agent imports at start or on first use (lazily imported adapters included).
MODULES = (
    "vpccni.ipamd.daemon",
    "vpccni.awsutils.ec2api",
    "vpccni.networkutils.pyroute_netlink",
    "vpccni.k8sapi.client",
    "vpccni.k8sapi.corev1",
)


def _protobuf_round_trip() -> None:
    from vpccni.rpc.generated import rpc_pb2

    request = rpc_pb2.AddNetworkRequest(K8S_POD_NAME="self-check", IfName="eth0")
    if rpc_pb2.AddNetworkRequest.FromString(request.SerializeToString()) != request:
        raise RuntimeError("a protobuf message did not survive serialization")


def _importing(name: str) -> Callable[[], None]:
    def check() -> None:
        importlib.import_module(name)

    return check


CHECKS: tuple[tuple[str, Callable[[], None]], ...] = (
    *((f"import {name}", _importing(name)) for name in MODULES),
    ("protobuf round trip", _protobuf_round_trip),
)


def native_extensions() -> list[str]:
    """Loaded modules of installed packages that are native code (an extension module's file), by name:
    those come from wheels, built for one architecture and C library."""
    installed = tuple(sysconfig.get_paths()[key] + "/" for key in ("purelib", "platlib"))
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (path := str(getattr(module, "__file__", "") or "")).endswith(".so") and path.startswith(installed)
    )


def run(out: Callable[[str], None] = print) -> int:
    out(
        f"aws-k8s-agent v{VERSION} (vpccni): Python {platform.python_version()} on "
        f"{platform.system()} {platform.machine()}"
    )
    for what, check in CHECKS:
        try:
            check()
        except Exception:  # any failure is the answer: say which check and why
            out(f"self-check failed: {what}:\n{traceback.format_exc().rstrip()}")
            return 1
    native = native_extensions()
    out(f"self-check ok: {len(CHECKS)} checks; native extensions loaded: {', '.join(native) or 'none'}")
    return 0
