"""Embeddings: texts in, one vector per text out, from an embedding model."""

from __future__ import annotations

from dataclasses import field

from domain.errors import EmptyRequest, InputTooLong, InvalidRequest, ProxyError
from domain.policy import Limits
from domain.usage import Usage
from domain.value import value_object

# One request embeds at most this many texts: a bound on work and on the answer's size.
MAX_EMBED_INPUTS = 2048


@value_object
class EmbedRequest:
    inputs: tuple[str, ...]
    model: str | None = None
    request_id: str = ""
    # A problem the transport found while decoding; refused and recorded like any refusal.
    rejection: ProxyError | None = field(default=None, compare=False, hash=False)

    def validate(self, limits: Limits) -> None:
        if self.rejection is not None:
            raise self.rejection
        if not self.inputs:
            raise EmptyRequest("there is no text to embed: send at least one input")
        if len(self.inputs) > MAX_EMBED_INPUTS:
            raise InvalidRequest(
                f"{len(self.inputs)} inputs in one request; at most {MAX_EMBED_INPUTS} are "
                "accepted: split them across requests"
            )
        if limits.max_input_length is not None:
            length = sum(len(text) for text in self.inputs)
            if length > limits.max_input_length:
                raise InputTooLong(length, limits.max_input_length)


@value_object
class Embeddings:
    request_id: str
    model_id: str
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage = Usage()
