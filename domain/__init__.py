"""Entities, value objects and errors of the proxy. Standard library only."""
