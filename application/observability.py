"""The prompt text an audit record carries."""

from __future__ import annotations

from domain.request import PromptRequest


def prompt_text(request: PromptRequest) -> str:
    """The prompt as an auditor reads it: every text of every message, in order."""
    return "\n\n".join(text for message in request.messages for text in message.texts())
