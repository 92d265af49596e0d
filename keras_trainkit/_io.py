"""Crash-safe file writes shared by every module that writes files.

A file is written to a temporary file in the same directory, flushed and
fsynced, then moved over the target with `os.replace` (atomic on POSIX and
Windows), and the directory entry is fsynced where the OS allows it. A
process killed at any moment leaves either the previous version of the file
or the new one, never a truncated mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Writes `path` atomically: `write(f)` fills a binary temporary file.

    Args:
        path: The file to create or replace.
        write: Called with the open temporary file (binary mode).
    """
    def produce(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_produce(path, produce)


def atomic_produce(path: str | os.PathLike, produce: Callable[[str], Any]) -> None:
    """Creates `path` atomically with a writer that takes a file name.

    For writers that open the file themselves (`model.save_weights`):
    `produce(tmp)` writes a temporary file in the same directory (named
    `.tmp-<random>-<basename>`, so the extension is kept), which is then
    fsynced and moved over `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        produce(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Writes `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """Writes `json.dumps(obj)` to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


def _fsync_directory(directory: str) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
