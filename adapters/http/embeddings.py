"""POST /v1/embeddings: OpenAI's embeddings request and answer around the EmbedText use case."""

from __future__ import annotations

import base64
import struct

from adapters.http.body import json_object
from domain.embedding import Embeddings, EmbedRequest
from domain.errors import InvalidRequest, ProxyError
from domain.identifiers import identifier_problem
from domain.value import value_object

_KNOWN = frozenset({"input", "model", "encoding_format", "user", "dimensions"})


@value_object
class EmbeddingsCall:
    request: EmbedRequest
    # "float" (JSON numbers) or "base64" (little-endian float32, what the openai SDK asks for).
    encoding: str = "float"
    user: str | None = None


def embeddings_call(body: bytes, request_id: str) -> EmbeddingsCall:
    """Never raises: an unusable body is a request carrying its rejection."""
    value = json_object(body)
    if isinstance(value, InvalidRequest):
        return _rejected(value, request_id)
    unknown = sorted(set(value) - _KNOWN)
    model = value.get("model")
    raw = value.get("input")
    encoding = value.get("encoding_format") or "float"
    user = value.get("user")
    problem: str | None = None
    if unknown:
        problem = (
            f"unknown fields {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(_KNOWN))}"
        )
    elif model is not None and not isinstance(model, str):
        problem = "'model' must be a string naming an embedding model"
    elif encoding not in ("float", "base64"):
        problem = f"encoding_format {encoding!r} is not 'float' or 'base64'"
    elif value.get("dimensions") is not None:
        problem = "'dimensions' is not supported: the model's own vector size is used"
    elif user is not None and not isinstance(user, str):
        problem = "'user' must be a string naming the end user"
    if problem is not None:
        return _rejected(InvalidRequest(problem), request_id)
    malformed = identifier_problem("model", model if isinstance(model, str) else None)
    malformed = malformed or identifier_problem("user", user if isinstance(user, str) else None)
    if malformed is not None:
        return _rejected(malformed, request_id)
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        inputs = tuple(str(item) for item in raw)
    else:
        return _rejected(
            InvalidRequest(
                "'input' must be a string or a list of strings (token arrays are not supported)"
            ),
            request_id,
        )
    return EmbeddingsCall(
        EmbedRequest(inputs, model if isinstance(model, str) else None, request_id),
        str(encoding),
        user if isinstance(user, str) and user else None,
    )


def _rejected(error: ProxyError, request_id: str) -> EmbeddingsCall:
    return EmbeddingsCall(EmbedRequest((), request_id=request_id, rejection=error))


def embeddings_answer(result: Embeddings, encoding: str) -> dict[str, object]:
    data = [
        {"object": "embedding", "index": index, "embedding": _encode(vector, encoding)}
        for index, vector in enumerate(result.vectors)
    ]
    tokens = result.usage.input_tokens or 0
    return {
        "object": "list",
        "data": data,
        "model": result.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: tuple[float, ...], encoding: str) -> object:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)
