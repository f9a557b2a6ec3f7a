"""Configuration, composition root, logging and the command line."""

from infrastructure.lean_imports import import_sqlite_utils_without_dataframes

# First, before anything here imports llm (which imports sqlite_utils).
import_sqlite_utils_without_dataframes()
