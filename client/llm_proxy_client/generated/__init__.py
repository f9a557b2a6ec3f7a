"""Generated from proto/llm_proxy.proto by proto/generate.py."""
