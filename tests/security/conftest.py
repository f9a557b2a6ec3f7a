"""The in-process server fixtures of the integration suite, for attacks that need no process
of their own."""

from tests.integration.conftest import proxy, start_proxy

__all__ = ["proxy", "start_proxy"]
