"""Settings helpers: every process builds one pydantic-settings object at start-up.

`load_settings` turns a validation error into one line per bad value that names the
environment variable to set, and exits.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class ConfigError(SystemExit):
    pass


def omniforge_home() -> Path:
    """Where local state lives (registry database, artifacts, pids, logs): $OMNIFORGE_HOME."""
    return Path(os.environ.get("OMNIFORGE_HOME") or Path.home() / ".omniforge").expanduser()


def default_database_url() -> str:
    return f"sqlite:///{omniforge_home() / 'registry.db'}"


def load_settings(cls: type[S], **overrides) -> S:
    try:
        return cls(**overrides)
    except ValidationError as e:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for err in e.errors():
            if not err["loc"]:          # a check across fields: its message names the variables
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            lines.append(f"{_env_name(cls, field, prefix)}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _env_name(cls, field: str, prefix: str) -> str:
    """The environment variable a field is read from (its alias when it has one)."""
    from pydantic import AliasChoices

    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [a for a in alias.choices if isinstance(a, str)]
            if field in names or field == name:
                return names[0]
    return f"{prefix}{field.upper()}"
