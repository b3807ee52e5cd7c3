"""Generated protobuf messages and gRPC stubs for conveyor.v1."""
