"""Integration tests: the real server on loopback, real gRPC, real llm models."""
