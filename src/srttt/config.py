"""Loading and validating ``params.yaml``, the one source of hyperparameters."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "params.schema.yaml"


class ConfigError(ValueError):
    """The parameters file is missing, not YAML, or does not match the schema."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(config: dict, *, source: str = "params.yaml") -> None:
    """Raise ConfigError naming the first invalid key, with the expected form."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = errors[0]
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    raise ConfigError(f"{source}: invalid value for '{key}': {error.message}; see schemas/params.schema.yaml")


def merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively with ``override`` (neither is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(*paths: str | os.PathLike) -> dict[str, Any]:
    """Load one or more YAML files (later files override earlier ones) and validate the result."""
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"parameters file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must contain a mapping at the top level")
        config = merge(config, data)
    validate(config, source=" + ".join(str(p) for p in paths))
    return config
