"""Group commit for the service: ``await ack()`` resolves once the rows buffered before it are durable.

A handler makes its router call (which buffers log rows in the router's
:class:`~banditroute.logs.store.LogWriter`, created with ``auto_flush=False``) and awaits a
ticket. The committer detaches the buffered rows at most every ``interval_s``, commits them
(one journal append and ``fdatasync``) in a worker thread and resolves the tickets of every
request whose rows were detached, in commit order; up to ``max_in_flight`` commits overlap.

A *side* write (``side``: the pending decisions written to Redis,
:class:`~banditroute.service.redis_outcomes.RedisOutcomes`) is detached with the rows and run in
parallel with their commit; the tickets resolve once both are done. It never fails a commit
(it says itself what it could not write); if the rows cannot be committed, it is discarded.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ..logs.store import LogWriter

__all__ = ["GroupCommit"]


class GroupCommit:
    """Resolves ``await ack()`` once every row buffered before the call is durable.

    Parameters
    ----------
    log : LogWriter
        Created with ``auto_flush=False``; only this committer writes its rows.
    interval_s : float
        At most one commit starts per interval.
    max_in_flight : int
        Commits writing at the same time; tickets still resolve in commit order.
    side : object, optional
        With ``detach() -> batch``, ``commit(batch)`` (never raises) and ``discard(batch)``: written
        with each commit (see above).
    """

    def __init__(self, log: LogWriter, *, interval_s: float, max_in_flight: int, side=None):
        self.log = log
        self.side = side
        self.interval_s = interval_s
        self.n_commits = 0
        self._waiters: list = []
        self._pool = ThreadPoolExecutor(2 * max_in_flight, thread_name_prefix="banditroute-commit")
        self._max_in_flight = max_in_flight
        self._task = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._closing = False
        self._previous = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def ack(self) -> None:
        """Wait until the rows buffered so far are durable (raises LogError if they cannot be)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._waiters):
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                continue
            await self._slots.acquire()
            waiters, self._waiters = self._waiters, []
            staged = None if self.side is None else self.side.detach()
            write = loop.run_in_executor(self._pool, self.log.commit_detached, self.log.detach())
            side = loop.run_in_executor(self._pool, self.side.commit, staged) if staged else None
            self._previous = loop.create_task(self._finish(write, waiters, self._previous, side, staged))
            if self.interval_s:
                await asyncio.sleep(self.interval_s)
        if self._previous is not None:
            await self._previous

    async def _finish(self, write, waiters: list, previous, side=None, staged=None) -> None:
        error = None
        try:
            await write
        except Exception as exc:  # noqa: BLE001 - handed to every waiter of this commit
            error = exc
        finally:
            if side is not None:
                await side  # never raises
                if error is not None:  # not acknowledged: nothing of it may be applied elsewhere
                    await asyncio.get_running_loop().run_in_executor(self._pool, self.side.discard, staged)
            self._slots.release()
        if previous is not None:
            await previous  # acknowledge in commit order
        self.n_commits += 1
        for future in waiters:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    async def close(self) -> None:
        """Commit what is waiting, stop, and flush anything still buffered."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
        await asyncio.get_running_loop().run_in_executor(self._pool, self.log.close)
        self._pool.shutdown(wait=True)
