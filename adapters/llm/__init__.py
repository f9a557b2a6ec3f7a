"""Model access through Simon Willison's llm library and its plugins."""

from adapters.llm.discovery import installed_plugins
from adapters.llm.embeddings import LlmEmbeddingGateway
from adapters.llm.errors import ModelConfigError
from adapters.llm.gateway import LlmGateway
from adapters.llm.registry import LlmModelRegistry

__all__ = [
    "LlmEmbeddingGateway",
    "LlmGateway",
    "LlmModelRegistry",
    "ModelConfigError",
    "installed_plugins",
]
