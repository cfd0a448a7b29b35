# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""What the command-line scripts share: a config file with overriding flags, checked key by key; local paths that
must not be looked up on the Hub; files written whole or not at all; a malloc that keeps freed memory.

    classes = parse_config_and_flags(parser, argv)   # `script.py config.yaml --flag value` or `script.py --flag ...`
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import json
import os
import sys
import types
import typing
from pathlib import Path

import yaml
from transformers import HfArgumentParser


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


def check_config_values(values: dict, dataclass_types, source: str = "config") -> dict:
    """`values` with each key checked against the dataclasses' fields and each value against its field's type."""
    fields = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                fields[f.name] = hints.get(f.name, typing.Any)
    if unknown := sorted(set(values) - set(fields)):
        raise ConfigError(f"{source}: unknown keys {unknown} (`--help` lists every argument)")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(value, fields[key])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: {key} must be {_describe(fields[key])}, not {value!r} ({type(value).__name__})"
            ) from None
    return checked


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


def missing_local_path(name_or_path: str) -> bool:
    """True for a path that is clearly meant to be local but does not exist: absolute, starting with '.', or inside an
    existing folder ('outputs/nothing'). Such a name is an error here, not a Hub id to look up."""
    path = Path(name_or_path)
    if path.exists():
        return False
    return path.is_absolute() or name_or_path.startswith(".") or (path.parent != Path(".") and path.parent.is_dir())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file beside it, flushed to disk, then renamed over it.
    A run killed halfway leaves the old file (or none), never a truncated one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory torch frees and hand it out again, instead of returning it to the OS.

    glibc serves every block above 32 MiB with a fresh `mmap` and unmaps it on free. Such blocks come and go at every
    step here (a beam-search step's scores are 160 x 50,257 floats; a batch of MobileNetV2 activations is larger), so
    each one pays a page fault for every 4 KiB page it touches, every time. The PyTorch CPU tuning guides preload
    jemalloc or tcmalloc for this; two `mallopt` settings get the same effect from glibc itself: no `mmap` for large
    blocks (M_MMAP_MAX 0) and no trimming of the heap (M_TRIM_THRESHOLD at its maximum). The cost: memory the process
    held at its peak stays with it until it exits, and blocks freed in between are reused less tightly (about 0.2 GB
    more peak RSS in a batch-16 training step). bench/bench_generation.py measures the speed in fresh processes,
    bench/bench_train_step.py the memory. The scripts call this at start-up; a library import never does.

    Returns False, changing nothing, off glibc, or when the environment already tunes malloc (a MALLOC_* variable or
    a preloaded allocator in LD_PRELOAD).
    """
    if any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
