"""Client-chosen identifiers (request ids, model names, end users): short and printable.

They end up in log lines, metrics labels and replies, so every transport refuses anything else
the same way, with a message that never repeats the value.
"""

from __future__ import annotations

from domain.errors import MalformedCall

MAX_IDENTIFIER_LENGTH = 256


def identifier_problem(field: str, value: str | None) -> MalformedCall | None:
    """Why `value` cannot be the `field` identifier, if it cannot."""
    if value is None or (len(value) <= MAX_IDENTIFIER_LENGTH and value.isprintable()):
        return None
    if len(value) > MAX_IDENTIFIER_LENGTH:
        return MalformedCall(
            f"{field} is {len(value)} characters; at most {MAX_IDENTIFIER_LENGTH} are accepted"
        )
    position, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
    return MalformedCall(
        f"{field} contains a control or other non-printable character (U+{ord(char):04X} at "
        f"position {position}); use printable characters only"
    )
