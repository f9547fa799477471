"""The upstream-compatible gRPC server: CNIBackend, ConfigServerBackend and grpc.health.v1."""
