"""The file-system steps that make a log file survive a crash of the process or the machine.

A file's bytes are durable once it is fsync'ed (``fdatasync`` for an append-only journal);
its name is durable once its directory is fsync'ed, and a directory's own name once its
parent is. Parquet parts and journal segments both go through these.

>>> import tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> make_dirs(root / "outcomes" / "date=2024-01-01")
>>> (root / "outcomes" / "date=2024-01-01").is_dir()
True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["datasync", "fsync_dir", "make_dirs", "write_all"]

datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (files created, renamed or deleted in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing the parent of each one created:
    a directory's entry must survive a machine crash as well as the files put in it."""
    missing = []
    d = Path(directory)
    while not d.is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by another writer, who syncs its parent
            continue
        fsync_dir(d.parent)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
