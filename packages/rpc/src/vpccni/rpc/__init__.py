"""vpccni.rpc: upstream-compatible gRPC contract (rpc.proto) and generated stubs."""
