"""Generated from packages/rpc/proto/rpc.proto by scripts/codegen.py: do not edit."""
