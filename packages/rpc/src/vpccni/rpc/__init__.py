"""vpccni.rpc: upstream-compatible gRPC contract (rpc.proto) and generated stubs.

``from vpccni.rpc import rpc_pb2, rpc_pb2_grpc`` gives the messages and the ``CNIBackend``, ``NPBackend``
and ``ConfigServerBackend`` service stubs and servicers, wire-compatible with upstream v1.23. The stubs are
generated into ``vpccni.rpc.generated`` by ``scripts/codegen.py`` and committed.
"""

from vpccni.rpc.generated import rpc_pb2, rpc_pb2_grpc

__all__ = ["rpc_pb2", "rpc_pb2_grpc"]
