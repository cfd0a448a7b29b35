# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Files: the project's cache directory, files written whole or not at all, hashed (one or several in a row), and
local paths that must not be looked up on the Hub."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """Where the project keeps what it makes once (converted weights, rendered synthetic scenes): `$CLIPCAP_CACHE`,
    else `$XDG_CACHE_HOME/clipcap` (`~/.cache/clipcap`)."""
    if os.environ.get("CLIPCAP_CACHE"):
        return Path(os.environ["CLIPCAP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipcap"


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    return files_sha256([path], chunk_size)


def files_sha256(paths: list[str | os.PathLike], chunk_size: int = 1 << 20) -> str:
    """SHA-256 of the files' bytes one after the other (a saved model's config and weight files: its fingerprint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()


def directory_size(path: str | os.PathLike) -> int:
    """Bytes in every file under `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


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
