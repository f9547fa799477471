"""Unix sockets ipamd serves on (`ipamd.sock` for gRPC, `cni.sock` for the aws-cni shim)."""

from __future__ import annotations

from vpccni.rpc.serving import remove_stale_socket

__all__ = ["remove_stale_socket"]
