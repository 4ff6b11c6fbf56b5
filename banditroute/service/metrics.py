"""Counters and a latency histogram of the service's replicas, rendered as Prometheus text.

Each replica (each worker process of ``serve --workers N``) counts its own traffic into a
table of named float64 counters: in memory for a replica on its own (``create_app``), or in a
file of the serve process's metrics directory (``ServiceConfig.metrics_dir``, made by
:func:`metrics_directory`) mapped into memory, so counting stays an in-place add (no system
call). A scrape reaches one worker, which reads the tables of every replica of the serve
process: every series carries a ``replica`` label (the replica's writer id) and every replica
that ran in this serve process has its series in every scrape, whichever worker answers, so
``sum(banditroute_decisions_total)`` is the process's total. A worker that died keeps its
table (its counters stay in the sums: they never go down while ``serve`` runs; uvicorn starts a
new worker, a new replica); ``banditroute_replica_up`` says which replicas are alive. A new
``serve`` starts from a new, empty directory, so it counts from zero.

>>> m = Metrics(["small", "large"], replica="w1")
>>> m.decision("small", 0.003)
>>> m.outcome("applied")
>>> m.error(422, "invalid_request")
>>> m.escalation("verifier_failed", "large"); m.failed_call("small", "timeout")
>>> text = m.render([("banditroute_commits_total", "Group commits.", 2)])
>>> 'banditroute_decisions_total{replica="w1",profile="small"} 1' in text
True
>>> 'banditroute_profile_share{profile="small"} 1' in text
True
>>> 'banditroute_decision_latency_seconds_bucket{replica="w1",le="0.005"} 1' in text
True
>>> 'banditroute_commits_total{replica="w1"} 2' in text and 'banditroute_replica_up{replica="w1"} 1' in text
True
>>> 'banditroute_escalations_total{replica="w1",reason="verifier_failed",profile="large"} 1' in text
True
>>> 'banditroute_escalation_rate 1' in text, 'failed_calls_total{replica="w1",profile="small",error="timeout"} 1' in text
(True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import shutil
import tempfile
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

try:
    import fcntl
except ImportError:  # not a Unix: every table counts as alive
    fcntl = None

__all__ = ["LATENCY_BUCKETS_S", "MAX_LABEL_VALUES", "Metrics", "metrics_directory"]

#: Upper bounds (seconds) of the decision latency histogram; +Inf is implicit.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 1.0)
#: How often a worker copies its replica's own counters (commits, forwarded outcomes...) into its table.
PUBLISH_INTERVAL_S = 0.5
#: Distinct values a client-chosen label (an escalation's reason, a failed call's error kind) takes
#: per replica; later new values are counted as "other" (the table has a fixed size).
MAX_LABEL_VALUES = 16

# A table (little-endian): header int64[8] = magic, version, pid, capacity, n_used, 0, 0, 0;
# the replica's name (_NAME bytes); capacity keys of _KEY bytes (UTF-8, NUL-padded); capacity
# float64 values. A key is written before n_used counts it, n_used before the value changes.
_MAGIC, _VERSION = 0x6D6574726963_6272, 1
_HEADER, _NAME, _KEY = 64, 128, 160
_PID, _CAPACITY, _N_USED = 2, 3, 4
_SEP = "\x1f"
_DROPPED = "dropped"  # slot 0: counts whose key no longer fits in the table
_PREFIX = "banditroute-metrics-"


def _size(capacity: int) -> int:
    return _HEADER + _NAME + capacity * (_KEY + 8)


class _Table(NamedTuple):
    """One replica's counters as read at a scrape."""

    replica: str
    alive: bool
    values: dict  # key (kind, *parts) -> value


class Metrics:
    """Counters of decisions, outcomes and errors, and a decision latency histogram.

    Parameters
    ----------
    profiles : iterable of str
        Profile names (each gets a series even before its first decision).
    replica : str
        Value of the ``replica`` label.
    directory : str or None
        The serve process's metrics directory: the table is a file there and a scrape reads
        every replica's table. None: the table is in memory and a scrape shows this replica.
    source : callable or None
        Returns the replica's own ``(name, help, value)`` gauges and counters (see
        :meth:`render`); with a directory they are copied into the table every
        :data:`PUBLISH_INTERVAL_S` so that other workers' scrapes see them.

    Notes
    -----
    Not thread-safe by design: the service updates it from its event loop only.
    """

    def __init__(self, profiles: Iterable[str], *, replica: str, directory: str | None = None,
                 source: Callable[[], Iterable[tuple[str, str, float]]] | None = None):
        profiles = list(profiles)
        self.replica = replica
        self.directory = directory
        self.path = None
        self._source = source
        self._timer = None
        capacity = 512 + (2 + 2 * MAX_LABEL_VALUES) * len(profiles)
        self._labels: dict[str, set] = {"escalations": set(), "failed_calls": set()}
        self._lock_fd = None
        if directory is None:
            self._buf = bytearray(_size(capacity))
        else:
            self.path, self._buf, self._lock_fd = _create(Path(directory), capacity)
        view = memoryview(self._buf)
        self._header = view[:_HEADER].cast("q")
        self._keys = view[_HEADER + _NAME:_HEADER + _NAME + capacity * _KEY]
        self._values = view[_HEADER + _NAME + capacity * _KEY:].cast("d")
        view[_HEADER:_HEADER + _NAME] = replica.encode()[:_NAME].ljust(_NAME, b"\0")
        self._header[_PID], self._header[_CAPACITY] = os.getpid(), capacity
        self._slots: dict[tuple, int] = {}
        self._slot((_DROPPED,))
        self._decided = {p: self._slot(("decisions", p)) for p in profiles}
        self._bucket0 = self._slot(("latency_bucket", "0"))
        for i in range(1, len(LATENCY_BUCKETS_S) + 1):
            self._slot(("latency_bucket", str(i)))
        self._latency_sum = self._slot(("latency_sum",))
        self._header[1], self._header[0] = _VERSION, _MAGIC  # readable from here on
        if directory is not None and source is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: published at each render only
                self._timer = asyncio.get_running_loop().call_later(PUBLISH_INTERVAL_S, self._tick)

    # -- counting (the hot path) --------------------------------------------------------------------
    def decision(self, profile: str, seconds: float) -> None:
        """Count one acknowledged decision and its end-to-end latency (request to durable ack)."""
        values = self._values
        i = self._decided.get(profile)
        values[self._slot(("decisions", profile)) if i is None else i] += 1.0
        values[self._bucket0 + bisect_left(LATENCY_BUCKETS_S, seconds)] += 1.0
        values[self._latency_sum] += seconds

    def outcome(self, status: str) -> None:
        """Count one acknowledged outcome by its status (applied, duplicate, late)."""
        i = self._slots.get(("outcomes", status))
        self._values[self._slot(("outcomes", status)) if i is None else i] += 1.0

    def error(self, status: int, code: str) -> None:
        """Count one error response."""
        key = ("errors", str(status), code)
        i = self._slots.get(key)
        self._values[self._slot(key) if i is None else i] += 1.0

    def escalation(self, reason: str, profile: str) -> None:
        """Count one acknowledged escalation by its reason and the child decision's profile."""
        self._values[self._slot(("escalations", self._bounded("escalations", reason), profile))] += 1.0

    def failed_call(self, profile: str, error: str) -> None:
        """Count one acknowledged failed call (an applied outcome with ``error``) by profile and kind."""
        self._values[self._slot(("failed_calls", profile, self._bounded("failed_calls", error)))] += 1.0

    def _bounded(self, kind: str, value: str) -> str:
        """``value``, or "other" once ``kind`` has :data:`MAX_LABEL_VALUES` distinct values."""
        seen = self._labels[kind]
        if value not in seen:
            if len(seen) >= MAX_LABEL_VALUES:
                return "other"
            seen.add(value)
        return value

    def _slot(self, key: tuple) -> int:
        """The index of ``key``'s counter, taking a free one for a new key."""
        i = self._slots.get(key)
        if i is not None:
            return i
        n, encoded = self._header[_N_USED], _SEP.join(key).encode()
        if n >= self._header[_CAPACITY] or len(encoded) > _KEY:
            return 0  # the table is full (or the key too long): counted as dropped
        self._keys[n * _KEY:(n + 1) * _KEY] = encoded.ljust(_KEY, b"\0")
        self._header[_N_USED] = n + 1
        self._slots[key] = n
        return n

    # -- the replica's own counters -----------------------------------------------------------------
    def publish(self, gauges: Iterable[tuple[str, str, float]]) -> None:
        """Copy ``(name, help, value)`` gauges into the table (what other workers' scrapes show)."""
        for name, _help, value in gauges:
            self._values[self._slot(("gauge", name))] = float(value)

    def _tick(self) -> None:
        try:
            self.publish(self._source())
        finally:
            self._timer = asyncio.get_running_loop().call_later(PUBLISH_INTERVAL_S, self._tick)

    def close(self) -> None:
        """The replica is going: publish its counters a last time, stop publishing, and release the
        table's lock (scrapes show it as gone; its counts stay in the directory for the sums)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._source is not None:
            self.publish(self._source())
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the scrape ---------------------------------------------------------------------------------
    def tables(self) -> list[_Table]:
        """Every replica's counters: this one's, and with a directory every other table there."""
        if self.directory is None:
            return [_parse(bytes(self._buf), alive=True)]
        tables = []
        for path in sorted(Path(self.directory).glob("*.metrics")):
            with contextlib.suppress(OSError, ValueError):  # unreadable or not (yet) a table
                tables.append(_read(path))
        return sorted(tables, key=lambda t: t.replica)

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """Prometheus text exposition (version 0.0.4) of every replica's series; ``gauges`` are this
        replica's own ``(name, help, value)`` series (published first: they are shown live here):
        a name ending in ``_total`` is a counter, shown for every replica, anything else a
        gauge, shown for the replicas alive."""
        gauges = list(gauges)
        self.publish(gauges)
        tables = self.tables()
        out = _Exposition()
        out.family("banditroute_decisions_total", "counter", "Decisions acknowledged, by profile.")
        shares: dict[str, float] = {}
        for t in tables:
            for key, n in t.values.items():
                if key[0] == "decisions":
                    out.series("banditroute_decisions_total", {"replica": t.replica, "profile": key[1]}, n)
                    shares[key[1]] = shares.get(key[1], 0.0) + n
        total = sum(shares.values())
        out.family("banditroute_profile_share", "gauge",
                   "Share of the decisions (of every replica of this serve process) that went to each profile.")
        for profile, n in shares.items():
            out.series("banditroute_profile_share", {"profile": profile}, n / total if total else 0.0)
        out.family("banditroute_outcomes_total", "counter", "Outcomes acknowledged, by status.")
        out.each(tables, "outcomes", "banditroute_outcomes_total", ("status",))
        out.family("banditroute_errors_total", "counter", "Error responses, by HTTP status and error code.")
        out.each(tables, "errors", "banditroute_errors_total", ("status", "code"))
        out.family("banditroute_escalations_total", "counter",
                   "Escalations acknowledged (POST /v1/escalate), by reason and the child decision's profile.")
        out.each(tables, "escalations", "banditroute_escalations_total", ("reason", "profile"))
        escalations = sum(n for t in tables for key, n in t.values.items() if key[0] == "escalations")
        out.family("banditroute_escalation_rate", "gauge", "Escalations per decision of /v1/decide (every replica "
                   "of this serve process, since it started); over a window: rate() of the two counters.")
        out.series("banditroute_escalation_rate", {}, escalations / total if total else 0.0)
        out.family("banditroute_failed_calls_total", "counter",
                   "Failed calls reported with applied outcomes (error=...), by profile and error kind.")
        out.each(tables, "failed_calls", "banditroute_failed_calls_total", ("profile", "error"))
        out.family("banditroute_decision_latency_seconds", "histogram",
                   "Decide requests, from arrival to durable acknowledgement.")
        for t in tables:
            out.histogram("banditroute_decision_latency_seconds", t)
        helps = {name: help_text for name, help_text, _ in gauges}
        names = list(helps) + sorted({k[1] for t in tables for k in t.values if k[0] == "gauge"} - set(helps))
        for name in names:
            counter = name.endswith("_total")
            out.family(name, "counter" if counter else "gauge", helps.get(name, "(published by another replica)"))
            for t in tables:
                if ("gauge", name) in t.values and (counter or t.alive):
                    out.series(name, {"replica": t.replica}, t.values[("gauge", name)])
        out.family("banditroute_replica_up", "gauge",
                   "1 while the replica's worker runs; the counters of the replicas gone stay in the sums.")
        for t in tables:
            out.series("banditroute_replica_up", {"replica": t.replica}, int(t.alive))
        if any(t.values.get((_DROPPED,)) for t in tables):
            out.family("banditroute_metrics_dropped_total", "counter", "Counts of series a full table could not hold.")
            for t in tables:
                out.series("banditroute_metrics_dropped_total", {"replica": t.replica}, t.values.get((_DROPPED,), 0))
        return out.text()


class _Exposition:
    """Lines of the Prometheus text format."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def series(self, name: str, labels: dict, value: float) -> None:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {_fmt(value)}" if text else f"{name} {_fmt(value)}")

    def each(self, tables, kind: str, name: str, label_names: tuple) -> None:
        for t in tables:
            for key, n in sorted(t.values.items()):
                if key[0] == kind:
                    self.series(name, {"replica": t.replica, **dict(zip(label_names, key[1:]))}, n)

    def histogram(self, name: str, t: _Table) -> None:
        cumulative = 0.0
        for i, bound in enumerate((*LATENCY_BUCKETS_S, "+Inf")):
            cumulative += t.values.get(("latency_bucket", str(i)), 0.0)
            le = bound if isinstance(bound, str) else repr(bound)
            self.series(f"{name}_bucket", {"replica": t.replica, "le": le}, cumulative)
        self.series(f"{name}_sum", {"replica": t.replica}, t.values.get(("latency_sum",), 0.0))
        self.series(f"{name}_count", {"replica": t.replica}, cumulative)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


# -- tables in a directory ------------------------------------------------------------------------
def _create(directory: Path, capacity: int):
    """A new table file, locked while this process lives (its lock says it is alive), mapped."""
    path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.metrics"
    lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    if fcntl is not None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    os.ftruncate(lock_fd, _size(capacity))
    fd = os.open(path, os.O_RDWR)  # mmap keeps a duplicate of it: the lock's must be closable alone
    try:
        return path, mmap.mmap(fd, _size(capacity)), lock_fd
    finally:
        os.close(fd)


def _read(path: Path) -> _Table:
    with open(path, "rb") as fh:
        data = fh.read()
        alive = True
        if fcntl is not None:
            try:  # a live worker holds an exclusive lock on its table
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                alive = False
            except BlockingIOError:
                pass
    return _parse(data, alive=alive)


def _parse(data: bytes, *, alive: bool) -> _Table:
    if len(data) < _HEADER:
        raise ValueError("not a metrics table")
    header = memoryview(data)[:_HEADER].cast("q")
    capacity, n = header[_CAPACITY], header[_N_USED]
    if header[0] != _MAGIC or header[1] != _VERSION or len(data) != _size(capacity) or not 0 <= n <= capacity:
        raise ValueError("not a metrics table")
    keys_at, values_at = _HEADER + _NAME, _HEADER + _NAME + capacity * _KEY
    values = memoryview(data)[values_at:].cast("d")
    table = {tuple(data[keys_at + i * _KEY:keys_at + (i + 1) * _KEY].rstrip(b"\0").decode().split(_SEP)): values[i]
             for i in range(n)}
    return _Table(data[_HEADER:_HEADER + _NAME].rstrip(b"\0").decode(), alive, table)


@contextlib.contextmanager
def metrics_directory(parent: str | None = None):
    """A new, empty directory for the tables of one serve process's workers (removed on exit).

    ``parent`` defaults to ``/dev/shm`` (memory: the tables are never written back to a disk)
    when writable, else the temporary directory. Directories there of serve processes that died
    without removing theirs (SIGKILL) are removed first: each is locked while its process lives.

    >>> with metrics_directory() as d:
    ...     w1, w2 = (Metrics(["small"], replica=name, directory=d) for name in ("w1", "w2"))
    ...     w1.decision("small", 0.001)
    ...     w1.close()  # its worker is gone: its counts stay
    ...     print([(t.replica, t.alive, t.values[("decisions", "small")]) for t in w2.tables()])
    ...     w2.close()
    [('w1', False, 1.0), ('w2', True, 0.0)]
    """
    if parent is None:
        parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    for stale in Path(parent).glob(f"{_PREFIX}*"):
        with contextlib.suppress(OSError):  # another user's, or already gone
            if fcntl is not None and _abandoned(stale / ".lock"):
                shutil.rmtree(stale, ignore_errors=True)
    path = tempfile.mkdtemp(prefix=_PREFIX, dir=parent)
    lock = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def _abandoned(path: Path) -> bool:
    """Whether a run directory's lock is free, and older than a serve process needs to take it."""
    if time.time() - path.stat().st_mtime < 60:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
