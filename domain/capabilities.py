"""Whether a served model can take a request at all, decided before anything is spent on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.catalog import ModelDescription
from domain.errors import AttachmentRefused, NotSupportedByModel, SchemaInvalid
from domain.request import PromptRequest


def check_supported(
    model: ModelDescription,
    request: PromptRequest,
    others: Callable[[], Sequence[ModelDescription]],
) -> None:
    """Raise the error that tells the client what `model` lacks; `others()` are the models the
    client could use instead, named in the message (asked for only when there is one)."""
    name = model.model_id
    if request.schema is not None and not model.supports_schema:
        raise SchemaInvalid(
            f"model {name!r} cannot produce structured output, so it cannot honour the "
            f"response schema. Served models that can: {_able(others, _schema)}"
        )
    if request.tools and not model.supports_tools:
        raise NotSupportedByModel(
            f"model {name!r} cannot call tools. Served models that can: {_able(others, _tools)}"
        )
    attachments = request.attachments()
    if attachments and not model.attachment_types:
        raise NotSupportedByModel(
            f"model {name!r} takes no attachments. Served models that do: "
            f"{_able(others, _attachments)}"
        )
    for index, attachment in enumerate(attachments):
        if attachment.base_type not in model.attachment_types:
            raise AttachmentRefused(
                f"attachment {index + 1} is {attachment.media_type!r}; model {name!r} accepts "
                f"{', '.join(sorted(model.attachment_types))}"
            )
    if not model.supports_conversation and request.has_history():
        raise NotSupportedByModel(
            f"model {name!r} cannot continue a conversation: send one user turn (with a system "
            f"message if needed). Served models that can: {_able(others, _conversation)}"
        )


def _schema(model: ModelDescription) -> bool:
    return model.supports_schema


def _tools(model: ModelDescription) -> bool:
    return model.supports_tools


def _attachments(model: ModelDescription) -> bool:
    return bool(model.attachment_types)


def _conversation(model: ModelDescription) -> bool:
    return model.supports_conversation


def _able(
    models: Callable[[], Sequence[ModelDescription]],
    capable: Callable[[ModelDescription], bool],
) -> str:
    names = [model.model_id for model in models() if capable(model)]
    return ", ".join(names) if names else "none"
