"""Configuration: typed settings, their schema, and where they come from."""

from infrastructure.config.loader import ConfigError, load_settings, to_plain
from infrastructure.config.settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings", "to_plain"]
