"""Generated gRPC stubs; run `make protos` to regenerate."""
