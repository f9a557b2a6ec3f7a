"""Fixtures for the whole suite. Keep additions small: each area has its own conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def llm_user_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """llm reads keys, aliases and its default model from here: never the developer's own."""
    path = tmp_path_factory.mktemp("llm-user")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_USER_PATH", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def xdg_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where a server started with default auth settings keeps its generated JWT secret."""
    path = tmp_path_factory.mktemp("xdg-config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(path))
        yield path
