"""The gRPC transport: the vibectl.llm_proxy protocol, server side and client side."""
