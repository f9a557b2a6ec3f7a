"""Stores of quota counters: in memory (one process, or a supervisor for its workers) and Redis."""

from adapters.quota.memory import MemoryQuotaStore

__all__ = ["MemoryQuotaStore"]
