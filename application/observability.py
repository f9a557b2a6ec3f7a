"""Tracing and audit text when nobody asked for them: as little work as possible."""

from __future__ import annotations

from types import TracebackType

from application.ports import AttributeValue
from domain.request import PromptRequest


class _NullSpan:
    """Both the span and its context manager, so opening one allocates nothing."""

    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NULL_SPAN = _NullSpan()


class NullTracer:
    def span(self, name: str) -> _NullSpan:
        return _NULL_SPAN


def prompt_text(request: PromptRequest) -> str:
    """The prompt as an auditor reads it: every text of every message, in order."""
    return "\n\n".join(text for message in request.messages for text in message.texts())
