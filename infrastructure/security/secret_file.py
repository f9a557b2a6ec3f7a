"""The development signing secret: generated once, kept 0600, refused if others can read it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from infrastructure.config.private_files import exposure
from infrastructure.config.settings import AuthSettings

SECRET_FILE_NAME = "jwt-secret"  # noqa: S105  # a file name, not a secret
# 32 random bytes: the 256-bit floor for HS256, written url-safe so it can be pasted anywhere.
GENERATED_SECRET_BYTES = 32


class SecurityError(Exception):
    """Authentication or TLS cannot be set up as configured; the message says how to fix it."""


def default_secret_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llm-proxy" / SECRET_FILE_NAME


def auto_secret_path(auth: AuthSettings) -> Path:
    if auth.auto_secret_file:
        return Path(auth.auto_secret_file).expanduser()
    return default_secret_file()


def _read_private_file(path: Path) -> str:
    problem = exposure(path)
    if problem is not None:
        raise SecurityError(problem)
    return path.read_text(encoding="utf-8").strip()


def load_or_create_secret(path: Path) -> tuple[str, bool]:
    """The secret kept at `path`, generating it (0600, directory 0700) the first time.

    Returns (secret, created). Creation uses O_EXCL so that workers starting together agree
    on one secret instead of overwriting each other's.
    """
    try:
        return _read_private_file(path), False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecurityError(f"cannot read the JWT secret {path}: {exc.strerror}") from exc
    secret = secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_private_file(path), False
    except OSError as exc:
        raise SecurityError(
            f"cannot create the JWT secret {path}: {exc.strerror}; set auth.auto_secret_file "
            "to a writable path, or configure auth.secret_file"
        ) from exc
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret, True
