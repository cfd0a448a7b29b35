# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""The scripts' command lines: a config file with overriding flags, checked key by key as strictly as flags are, and
a model's `config_overrides` checked against its config class.

    classes = parse_config_and_flags(parser, argv)   # `script.py config.yaml --flag value` or `script.py --flag ...`
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from configuration_clipcap import ClipCapConfig


class ConfigError(ValueError):
    """A config file or argument the scripts cannot use: one line, shown as `script.py: error: ...`."""


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def parse_config_and_flags(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple:
    """The parser's dataclasses from flags, or from a .yaml/.json file given first, optionally followed by flags that
    override it (`run_train.py configs/demo.yaml --lambda_cos 0`).

    A file's keys are checked as strictly as flags are: an unknown key or a value of the wrong type is a
    `ConfigError` naming the key. Strings that spell a number or a boolean are read as one (PyYAML reads `1e-3` as a
    string), as argparse reads flags. Flag errors exit with argparse's usage message (status 2).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or not argv[0].endswith(CONFIG_SUFFIXES):
        return parser.parse_args_into_dataclasses(args=argv)
    path = Path(argv[0])
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        values = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not readable {path.suffix[1:].upper()}: {str(error).splitlines()[0]}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of argument names to values, not a {type(values).__name__}")
    values = check_config_values(values, parser.dataclass_types, source=str(path))
    parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv[1:])


def check_config_values(
    values: dict, dataclass_types, source: str = "config", known: str = "`--help` lists every argument"
) -> dict:
    """`values` with each key checked against the dataclasses' fields and each value against its field's type;
    `known` says where the valid keys are listed."""
    fields = {}
    for cls in dataclass_types:
        hints = _field_types(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                fields[f.name] = hints.get(f.name, typing.Any)
    if unknown := sorted(set(values) - set(fields)):
        raise ConfigError(f"{source}: unknown keys {unknown} ({known})")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(value, fields[key])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: {key} must be {_describe(fields[key])}, not {value!r} ({type(value).__name__})"
            ) from None
    return checked


def _field_types(cls) -> dict:
    """The type of each annotated field of a dataclass, as `typing.get_type_hints` gives them. Where that fails (a
    transformers config's base class annotates with names it imports only for type checking) each annotation is
    resolved on its own, and one that cannot be is `Any`."""
    try:
        return typing.get_type_hints(cls)
    except NameError:
        resolved = {}
        for klass in reversed(cls.__mro__):
            namespace = vars(sys.modules[klass.__module__])
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                try:
                    resolved[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
                except Exception:  # noqa: BLE001 - an unresolvable annotation is checked as Any
                    resolved[name] = typing.Any
        return resolved


_NONE = type(None)


def _coerce(value, annotation):
    """`value` as `annotation` (bool, int, float, str, an Enum, list[...], dict, unions, Optional, Literal)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if _NONE in args:
                return None
            raise TypeError
        for option in (a for a in args if a is not _NONE):
            try:
                return _coerce(value, option)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError
    if value is None:
        raise TypeError
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise TypeError
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise TypeError
        return annotation(value)  # a string that does not spell a number raises ValueError
    if annotation is str:
        if isinstance(value, (dict, list, bool)):
            raise TypeError
        return str(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation(value).value
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(item, args[0]) for item in value] if args else value
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value  # an annotation this checker does not model: the dataclass takes it as is


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if annotation is _NONE:
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    if annotation in names:
        return names[annotation]
    if origin in (list, tuple) or annotation in (list, tuple):
        return "a list"
    return getattr(annotation, "__name__", str(annotation))


def parse_config_overrides(overrides: dict | str | None, config_class) -> dict:
    """`config_overrides` as keyword arguments of `config_class` (a dataclass config such as `ClipCapConfig`).

    A mapping (what a config file gives) or a string `key=value,key=value` (a flag, as transformers' `run_clm.py`
    takes it); a dotted key sets a field of a sub-config given as a mapping (`text_config.n_layer=2`). Every key must
    be a field of `config_class`, and every value is read as that field's type, so a typo is one `ConfigError`
    naming the key. An empty string or mapping overrides nothing.
    """
    if not overrides:
        return {}
    if isinstance(overrides, str):
        values = {}
        for item in overrides.split(","):
            key, equals, value = item.partition("=")
            if not equals or not key.strip():
                raise ConfigError(f"config_overrides: {item!r} is not key=value")
            parsed = yaml.safe_load(value)  # numbers, booleans and null (also an empty value) as YAML reads them
            *parents, name = key.strip().split(".")
            target = values
            for parent in parents:
                target = target.setdefault(parent, {})
            target[name] = parsed
        overrides = values
    if not isinstance(overrides, dict):
        raise ConfigError(f"config_overrides must be a mapping or key=value,... , not {type(overrides).__name__}")
    return _check_config(overrides, config_class, "config_overrides")


def _check_config(values: dict, config_class, source: str) -> dict:
    """`check_config_values` against a config class, and a mapping given for a sub-config (a field whose type is
    another dataclass config, e.g. `text_config: GPT2Config`) against that class too."""
    checked = check_config_values(values, [config_class], source, known=f"see {config_class.__name__}'s fields")
    hints = _field_types(config_class)
    for key, value in checked.items():
        sub_configs = [t for t in typing.get_args(hints.get(key)) if dataclasses.is_dataclass(t)]
        if isinstance(value, dict) and sub_configs:
            checked[key] = _check_config(value, sub_configs[0], f"{source}: {key}")
    return checked


def build_model_config(overrides: dict | str | None, teacher_embed_dim: int | None = None) -> ClipCapConfig:
    """A new model's `ClipCapConfig`: its defaults with `overrides` (`parse_config_overrides`). `teacher_embed_dim`
    (the teacher's embedding size) sizes the teacher head unless the overrides set it."""
    kwargs = parse_config_overrides(overrides, ClipCapConfig)
    if teacher_embed_dim is not None:
        kwargs.setdefault("teacher_embed_dim", teacher_embed_dim)
    return ClipCapConfig(**kwargs)
