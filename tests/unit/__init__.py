"""Unit tests: use cases and adapters against in-memory fakes."""
