"""Assemble the effective configuration: defaults < YAML file < environment < CLI flags.

Every source is turned into one plain nested mapping, deep-merged in precedence order, and
validated once by the marshmallow schema, so an error can always name the exact key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields

from infrastructure.config.private_files import exposure
from infrastructure.config.schema import SettingsSchema
from infrastructure.config.settings import Settings

ENV_PREFIX = "LLM_PROXY_"
CONFIG_FILE_ENV = "LLM_PROXY_CONFIG"
_NESTING = "__"
_FILE_SUFFIX = "_file"
_MASK = "***"


class ConfigError(Exception):
    """The configuration cannot be used; each problem names a key, its value and what is wanted."""

    def __init__(self, problems: Iterable[str], source: str = "configuration") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(f"invalid {source}:\n" + "\n".join(f"  - {p}" for p in self.problems))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path} is not valid YAML: {_yaml_problem(exc)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path} must hold a mapping of sections, not a {type(data).__name__}"])
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quoted excerpt of the file: the excerpt may
    be the line holding a secret."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return type(error).__name__
    problem = error.problem or error.context or "syntax error"
    mark = error.problem_mark or error.context_mark
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}"


def _env_value(raw: str) -> Any:
    # Lists and mappings use YAML flow syntax; scalars stay strings for the schema to coerce,
    # so that "yes" in a string field is not silently turned into a boolean.
    stripped = raw.strip()
    if stripped.startswith(("[", "{")):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return raw
    if stripped.lower() in ("null", "none", "~"):
        return None
    return raw


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`LLM_PROXY_SERVER__PORT=50052` → {"server": {"port": "50052"}}; keys without `__` are
    not configuration (LLM_PROXY_URL and LLM_PROXY_TOKEN belong to clients)."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or _NESTING not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split(_NESTING)]
        if not all(path):
            continue
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = _env_value(raw)
    return result


def _section_schema(field: fields.Field[Any]) -> Schema | None:
    """The schema of a nested section, or of each entry of a list of sections."""
    if isinstance(field, fields.List):
        field = field.inner
    if isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
        return field.schema
    return None


def _secret_fields(schema: Schema) -> dict[str, Any]:
    """Mirror of the schema: True for secret leaves, nested dicts for sections (a list of
    sections, such as auth.keys, is mirrored by the dict of one entry)."""
    tree: dict[str, Any] = {}
    for name, field in schema.fields.items():
        section = _section_schema(field)
        if section is not None:
            tree[name] = _secret_fields(section)
        elif field.metadata.get("secret"):
            tree[name] = True
    return tree


def _resolve_secret_files(raw: dict[str, Any], secrets: Mapping[str, Any], path: str) -> None:
    for key, sub in secrets.items():
        value = raw.get(key)
        if isinstance(sub, Mapping):
            if isinstance(value, dict):
                _resolve_secret_files(value, sub, f"{path}{key}.")
            elif isinstance(value, list):
                # Copied so that resolving never edits the caller's (possibly shared) data.
                raw[key] = value = [dict(v) if isinstance(v, Mapping) else v for v in value]
                for index, entry in enumerate(value):
                    if isinstance(entry, dict):
                        _resolve_secret_files(entry, sub, f"{path}{key}.{index}.")
            continue
        file_key = key + _FILE_SUFFIX
        if file_key not in raw:
            continue
        file_name = raw.pop(file_key)
        if file_name is None:
            continue
        secret_path = Path(str(file_name)).expanduser()
        try:
            problem = exposure(secret_path)
            if problem is not None:
                raise ConfigError([f"{path}{file_key}: {problem}"])
            raw[key] = secret_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [f"{path}{file_key}: cannot read secret file {file_name!r}: {exc.strerror}"]
            ) from exc


def _locate(raw: Mapping[str, Any], path: list[str]) -> tuple[list[str], Any]:
    """The key path a user wrote for a marshmallow error path, and the value found there.

    marshmallow adds levels that are not keys: "_schema" for an error about a whole section,
    and "key"/"value" under each entry of a Dict field. They are dropped unless the data really
    has a key of that name; for a "key" error the bad value is the key itself.
    """
    shown: list[str] = []
    node: Any = raw
    for part in path:
        if isinstance(node, Mapping) and part in node:
            shown.append(part)
            node = node[part]
        elif part == "key" and shown:
            node = shown[-1]
        elif part not in ("_schema", "value"):
            shown.append(part)
            node = None
    return shown, node


def _is_secret(secrets: Mapping[str, Any], path: list[str]) -> bool:
    """Whether a user's key path names a secret leaf; list indices (auth.keys.0.secret) are
    skipped, as _secret_fields mirrors a list of sections by one entry."""
    node: Any = secrets
    for part in path:
        if part.isdigit() and isinstance(node, Mapping):
            continue
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return node is True


def _flatten(
    messages: Any, raw: Mapping[str, Any], path: list[str], secrets: Mapping[str, Any]
) -> list[str]:
    if isinstance(messages, Mapping):
        problems: list[str] = []
        for key, sub in messages.items():
            problems.extend(_flatten(sub, raw, [*path, str(key)], secrets))
        return problems
    texts = [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]
    shown, value = _locate(raw, path)
    dotted = ".".join(shown)
    if any(text == "Unknown field." for text in texts):
        return [f"{dotted}: unknown key; check the spelling against `config show`"]
    got = ""
    if value is not None and not isinstance(value, Mapping):
        # A secret is never echoed, not even when it is the wrong type (YAML reads a long
        # digit string as a number); its type is enough to fix it.
        shown_value = (
            _MASK + f" (a {type(value).__name__})" if _is_secret(secrets, shown) else repr(value)
        )
        got = f" (got {shown_value})"
    return [f"{dotted}: {' '.join(texts)}{got}"]


def validate(raw: Mapping[str, Any]) -> Settings:
    schema = SettingsSchema()
    data = {key: dict(value) if isinstance(value, Mapping) else value for key, value in raw.items()}
    secrets = _secret_fields(schema)
    _resolve_secret_files(data, secrets, "")
    for section in schema.fields:
        # A section left empty in YAML (every key commented out) loads as None: use defaults.
        if data.get(section) is None:
            data[section] = {}
    try:
        settings = schema.load(data)
    except ValidationError as exc:
        # `from None`: the chained marshmallow error holds the raw values, secrets included.
        raise ConfigError(_flatten(exc.messages, data, [], secrets)) from None
    assert isinstance(settings, Settings)
    return settings


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The effective settings. `overrides` are CLI flags, already nested by section."""
    env = os.environ if environ is None else environ
    merged = merged_sources(config_file, env, overrides or {})
    return validate(merged)


def merged_sources(
    config_file: Path | None, environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    if config_file is None and environ.get(CONFIG_FILE_ENV):
        config_file = Path(environ[CONFIG_FILE_ENV])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged = deep_merge(merged, read_yaml(config_file))
    merged = deep_merge(merged, from_environment(environ))
    return deep_merge(merged, overrides)


def to_plain(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked, for `config show`."""
    schema = SettingsSchema()
    dumped = schema.dump(settings)
    _mask(dumped, _secret_fields(schema))
    assert isinstance(dumped, dict)
    return dumped


def _mask(dumped: dict[str, Any], secrets: Mapping[str, Any]) -> None:
    for key, sub in secrets.items():
        value = dumped.get(key)
        if isinstance(sub, Mapping):
            if isinstance(value, dict):
                _mask(value, sub)
            elif isinstance(value, list):
                for entry in value:
                    if isinstance(entry, dict):
                        _mask(entry, sub)
        elif value:
            dumped[key] = _MASK
