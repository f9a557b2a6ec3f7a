"""The usage ledger: a batching writer in front of SQLite (embedded) or PostgreSQL."""

from adapters.ledger.batching import BatchingLedger, LedgerSink
from adapters.ledger.sqlite import SqliteSink

__all__ = ["BatchingLedger", "LedgerSink", "SqliteSink"]
