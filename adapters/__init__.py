"""Adapters: each implements ports or drives use cases; none imports another."""
