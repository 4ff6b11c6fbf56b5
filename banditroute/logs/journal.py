"""The log's journal: an append-only write-ahead file per writer, compacted into Parquet parts.

A group commit that writes a Parquet part costs milliseconds of encoding per table; a service
committing every few milliseconds spends most of its CPU there and leaves a small file per
commit. With the journal, a commit appends one line (JSON, one column list per table) to the
writer's current *segment* and ``fdatasync``\\ s it: what the commit acknowledged is on disk.
A segment is *compacted* into ordinary Parquet parts (one per table and date, named
``part-<writer>-j<segment>.parquet``) when it reaches ``segment_rows`` rows or
``segment_s`` seconds, when the writer closes, and, for segments left behind by a process
that died, when any writer opens the log directory. The files and their format are
:mod:`banditroute.logs.segments`; this module is the writer's side (:class:`Journal`, its
compactor thread or process) and the locks that tell a live writer from a dead one.

Exactly once: the part names are derived from the segment, so compacting a segment again
(after a crash between writing its parts and deleting it) rewrites the same files with the
same rows. A live writer holds an exclusive ``flock`` on each of its segments until they are
deleted; a segment whose lock can be taken belongs to a dead process and may be compacted.
Readers (:func:`banditroute.scan_table`) see the rows of segments not yet compacted too,
and never a row twice: a segment's rows are skipped for every (table, date) whose part exists.

>>> import tempfile
>>> log_dir = tempfile.mkdtemp()
>>> j = Journal(log_dir, "w1", lambda writer, segment, path: None)
>>> j.append({"outcomes": [["d0"]]}, 1)
>>> [segment[:2] for segment in live_segments(log_dir)]
[('w1', 0)]
>>> j.close()
>>> live_segments(log_dir)
[]
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, LogError
from .durable import datasync, fsync_dir, make_dirs, write_all
from .segments import (JOURNAL_DIR, encode_commit, journal_dir, live_segments, lock_path, part_name, read_segment,
                       segment_columns, segment_path)

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no journal; the Parquet-per-flush log still works
    fcntl = None

_log = logging.getLogger("banditroute.logs.journal")

__all__ = ["claim_writer", "Journal", "writer_lock", "forget_writer", "recover", "serve_compactions",
           # the segment format and durable file steps, kept importable from here
           "JOURNAL_DIR", "journal_dir", "part_name", "read_segment", "segment_columns", "live_segments",
           "fsync_dir", "make_dirs"]


def _take_lock(path: Path) -> tuple[str, int | None]:
    """Try to take ``path``'s exclusive lock: ``("absent", None)`` if the file is gone,
    ``("alive", None)`` if another process holds it, ``("dead", fd)`` with the lock held on
    ``fd`` (the caller closes it) if its holder is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "absent", None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "alive", None
    if not path.exists():  # deleted by its holder between our open and lock
        os.close(fd)
        return "absent", None
    return "dead", fd


class _Segment:
    __slots__ = ("number", "path", "fd", "rows", "opened", "size")

    def __init__(self, root: Path, writer: str, number: int):
        self.number = number
        self.path = segment_path(root, writer, number)
        # Created under a hidden name and locked before it gets its real name: recovery only
        # looks at real names, so it can never take (and delete) a segment being born.
        tmp = segment_path(root, writer, number, temporary=True)
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours until compacted and deleted
        os.rename(tmp, self.path)
        fsync_dir(root)  # the segment's directory entry must survive a crash
        self.rows = 0
        self.size = 0  # bytes of whole, durable lines
        self.opened = time.monotonic()


class Journal:
    """One writer's journal: :meth:`append` commits durably; full segments are compacted.

    Parameters
    ----------
    log_dir : Path
    writer : str
        The writer id (segment and part names start with it).
    compact : callable(writer, segment, path)
        Writes a closed segment's Parquet parts (durably); the journal deletes the segment after.
    segment_rows, segment_s :
        A segment is closed and compacted after this many rows, or when it is this old (checked
        at each commit and by the background compactor, so an idle writer's rows still reach
        Parquet).
    compactor : {"thread", "process"}
        Where compaction runs: a thread of this process, or a child process at a lower CPU
        priority (``python -m banditroute.logs.compactor``; a service's choice: parsing
        and encoding tens of thousands of rows in-process holds the GIL in slices long enough
        to show in request latency). If the child fails, the thread takes over that segment.
    first_segment : int
        The first segment's number (a Delta log's writer starts above its id's committed ones).
        Segments are compacted in order: one whose compaction failed holds back the later ones
        (a Delta log counts a writer's segments as committed up to a number).
    """

    def __init__(self, log_dir: Path, writer: str, compact, *, segment_rows: int = 20_000, segment_s: float = 10.0,
                 compactor: str = "thread", first_segment: int = 0):
        if compactor not in ("thread", "process"):
            raise ConfigError("journal_compactor", compactor, "must be 'thread' or 'process'")
        if fcntl is None:
            raise ConfigError("journal", True, "needs POSIX file locks (fcntl), not available on this system")
        self.compactor = compactor
        self._child = None
        self.log_dir = Path(log_dir)
        self.root = journal_dir(log_dir)
        make_dirs(self.root)
        self.writer = writer
        self._compact_fn = compact
        self.segment_rows = int(segment_rows)
        self.segment_s = float(segment_s)
        self._lock = threading.Lock()  # orders appends and rotations
        self._next = int(first_segment)
        self._current: _Segment | None = None
        self._closed_segments: list[_Segment] = []
        self._retry: list[_Segment] = []  # segments whose compaction failed (compactor thread only)
        self._retry_at = 0.0
        self._cv = threading.Condition()
        self._stop = False
        self.error: BaseException | None = None
        self.n_compacted = 0
        # held for the writer's lifetime: another process on this log directory can tell a live
        # writer from a dead one (see writer_lock)
        self._alive_fd = os.open(lock_path(log_dir, writer), os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._alive_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._thread = threading.Thread(target=self._compactor, name=f"banditroute-journal-{writer}", daemon=True)
        self._thread.start()

    # -- writing ---------------------------------------------------------------------------------
    def append(self, commit: dict[str, list[list]], n_rows: int) -> None:
        """Append one commit (table -> column lists) and fdatasync it; on return it is durable."""
        line = encode_commit(commit)
        with self._lock:
            seg = None
            try:
                seg = self._current
                if seg is None:
                    seg = self._current = _Segment(self.root, self.writer, self._take_number())
                write_all(seg.fd, line)
                datasync(seg.fd)
            except OSError as exc:
                # A failed commit must leave nothing behind (a retry would log its rows twice):
                # cut the segment back to its last whole line, or, if even that fails, start a
                # new segment so the half-written line stays the last of its own (readers skip it).
                if seg is not None and not _cut(seg):
                    self._rotate()
                raise LogError("log_dir/_journal", str(self.root), f"cannot be written ({exc.strerror})") from None
            seg.size += len(line)
            seg.rows += n_rows
            if seg.rows >= self.segment_rows or time.monotonic() - seg.opened >= self.segment_s:
                self._rotate()

    def _take_number(self) -> int:
        # never reuse a number: a dead predecessor with the same writer id cannot exist (ids are
        # random), but a segment of ours still being compacted can
        number = self._next
        self._next += 1
        return number

    def _rotate(self) -> None:
        """Close the current segment (under the lock) and hand it to the compactor."""
        seg, self._current = self._current, None
        if seg is not None:
            with self._cv:
                self._closed_segments.append(seg)
                self._cv.notify()

    # -- compaction ------------------------------------------------------------------------------
    def _compactor(self) -> None:
        while True:
            with self._cv:
                if not self._closed_segments and not self._stop:
                    self._cv.wait(timeout=max(0.05, self.segment_s / 4))
                todo, self._closed_segments = self._closed_segments, []
                stop = self._stop
            if self._retry:  # in order: new segments wait behind the ones to retry
                todo, self._retry = ((self._retry + todo, []) if stop or time.monotonic() >= self._retry_at
                                     else ([], self._retry + todo))
            if not todo:
                self._rotate_if_old()
            for i, seg in enumerate(todo):
                if not self._compact(seg, last_try=stop):
                    self._hold_back(todo[i + 1:], last_try=stop)
                    break
            if stop and not todo:
                with self._cv:
                    if not self._closed_segments:
                        return

    def _rotate_if_old(self) -> None:
        with self._lock:
            seg = self._current
            if seg is not None and seg.rows and time.monotonic() - seg.opened >= self.segment_s:
                self._rotate()

    def _hold_back(self, segments: list[_Segment], *, last_try: bool) -> None:
        """Segments after a failed one: retried after it, or (last try) left to a recovery, in order."""
        if not last_try:
            self._retry.extend(segments)
            return
        for seg in segments:
            os.close(seg.fd)

    def _compact(self, seg: _Segment, *, last_try: bool) -> bool:
        """Compact a closed segment and delete it. If that fails (a full disk), the segment
        stays, still read by readers, and is tried again later; after the last try (closing)
        its lock is released, so the next writer on the directory recovers it. Returns whether
        it was compacted."""
        try:
            if self.compactor == "process":
                try:
                    self._compact_in_child(seg)
                except Exception as exc:  # noqa: BLE001 - the thread does it instead; nothing is lost
                    _log.warning("journal compactor process failed (%s); compacting in a thread", exc)
                    self._stop_child()
                    self._compact_fn(self.writer, seg.number, seg.path)
            else:
                self._compact_fn(self.writer, seg.number, seg.path)
            os.unlink(seg.path)
            fsync_dir(self.root)
            self.n_compacted += 1
        except Exception as exc:  # noqa: BLE001 - retried; after the last try kept for close()
            if not last_try:
                _log.warning("journal segment %s not compacted (%s); retrying later", seg.path, exc)
                self._retry.append(seg)
                self._retry_at = time.monotonic() + max(1.0, self.segment_s / 4)
                return False
            self.error = exc
            os.close(seg.fd)
            return False
        os.close(seg.fd)  # releases the lock: a leftover segment is recovered by the next writer
        return True

    def _compact_in_child(self, seg: _Segment) -> None:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen([sys.executable, "-m", "banditroute.logs.compactor", str(self.log_dir)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._child.stdin.write(f"{self.writer}\t{seg.number}\t{seg.path}\n")
        self._child.stdin.flush()
        reply = self._child.stdout.readline().strip()  # waits without the GIL
        if reply != "ok":
            raise LogError("journal", str(seg.path), f"compactor process answered {reply or 'nothing'!r}")

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            try:
                child.stdin.close()
                child.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it is being discarded either way
                child.kill()

    def close(self) -> None:
        """Close the current segment, compact every closed one, stop the compactor."""
        with self._lock:
            self._rotate()
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join()
        self._stop_child()
        if self._alive_fd is not None:
            os.unlink(lock_path(self.log_dir, self.writer))
            os.close(self._alive_fd)
            self._alive_fd = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _cut(seg: _Segment) -> bool:
    """Truncate a segment to its durable lines after a failed append; False if that fails too."""
    try:
        os.ftruncate(seg.fd, seg.size)
        return True
    except OSError:
        return False


@contextmanager
def writer_lock(log_dir: str | os.PathLike, writer: str):
    """Yield ``"absent"`` (the writer never wrote a journal here), ``"alive"`` (its process
    holds its lock) or ``"dead"`` (it had a journal here and is gone: the lock is ours until
    the block ends; :func:`forget_writer` inside the block deletes the lock file).

    >>> import tempfile
    >>> with writer_lock(tempfile.mkdtemp(), "w1") as state:
    ...     state
    'absent'
    """
    if fcntl is None:
        yield "absent"
        return
    state, fd = _take_lock(lock_path(log_dir, writer))
    try:
        yield state
    finally:
        if fd is not None:
            os.close(fd)


def claim_writer(log_dir: str | os.PathLike, writer: str) -> tuple[str, int | None]:
    """Take over a gone writer: ``("dead", fd)`` with its lock held on ``fd`` until the caller
    closes it (so no other process takes it over too), ``("alive", None)`` if another process
    holds the lock (the writer itself, or a router that took it over first). A writer without a
    lock file (it closed cleanly, or never wrote a journal here) gets one, so that it too is
    taken over by one process only; ``("absent", None)`` only where file locks do not exist."""
    if fcntl is None or not journal_dir(log_dir).is_dir():
        return "absent", None
    path = lock_path(log_dir, writer)
    for _ in range(3):  # a holder deleting the file between our open and our lock: try again
        state, fd = _take_lock(path)
        if state != "absent":
            return state, fd
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return "alive", None
        if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
            return "dead", fd
        os.close(fd)
    return "alive", None


def forget_writer(log_dir: str | os.PathLike, writer: str) -> None:
    """Delete a dead writer's lock file (call inside :func:`writer_lock` once its rows are adopted)."""
    try:
        os.unlink(lock_path(log_dir, writer))
    except FileNotFoundError:
        pass


def serve_compactions(log_dir: str, compact, stdin=None, stdout=None) -> None:
    """The compactor process's loop: one ``writer<TAB>segment<TAB>path`` line in, ``ok`` (or
    ``error ...``) out, until its stdin closes (the writer closed, or died)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        os.nice(10)  # serving requests comes first
    except OSError:
        pass
    for line in stdin:
        writer, number, path = line.rstrip("\n").split("\t")
        try:
            compact(writer, int(number), Path(path))
            stdout.write("ok\n")
        except Exception as exc:  # noqa: BLE001 - reported to the writer, which compacts itself
            stdout.write(f"error {type(exc).__name__}: {exc}\n".replace("\n", " ").rstrip() + "\n")
        stdout.flush()


def recover(log_dir: str | os.PathLike, compact) -> int:
    """Compact and delete every segment whose writer is gone (its lock can be taken).

    A damaged segment (an unreadable line before readable ones) never stops the writer opening
    the directory: its readable lines are compacted and the file is moved to ``_quarantine``
    (:func:`~banditroute.logs.quarantine.salvage_segment`; list them with
    :func:`~banditroute.logs.quarantine.quarantined_files`). A failure to write still raises,
    leaving the segment for the next recovery.

    A writer's segments are compacted in order: once one is held by another process (its live
    writer, or another recovery), its later segments are left to that process too.

    Returns the number of segments recovered (salvaged ones included)."""
    from .quarantine import salvage_segment, segment_damage  # only recovery needs them

    n = 0
    if fcntl is None:
        return 0  # no journal can have been written here by this system
    held = set()  # writers with a segment another process holds
    for writer, number, path in live_segments(log_dir):
        if writer in held:
            continue
        state, fd = _take_lock(path)
        if fd is None:
            if state == "alive":  # a live writer's, or being recovered elsewhere: it goes on in order
                held.add(writer)
            continue  # (absent: compacted meanwhile by its owner)
        try:
            try:
                compact(writer, number, path)
            except Exception:
                if segment_damage(path) is None:
                    raise  # the segment reads whole: the failure is elsewhere (e.g. a full disk)
                salvage_segment(log_dir, writer, number, path, compact)
            else:
                os.unlink(path)
            n += 1
        finally:
            os.close(fd)
    if n:
        fsync_dir(journal_dir(log_dir))
    return n
