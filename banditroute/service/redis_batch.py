"""Lua scripts called from the event loop, batched: concurrent calls share one pipeline.

Each outcome of :mod:`banditroute.service.outcome_api` makes one Redis call. Made one by one,
each would cost ~160 us of the event loop's CPU (redis-py's asyncio client, measured) and a
connection of its own while in flight (the client's pool refuses a 101st); a thread hop per call
costs more (measured: about half the throughput). Here the calls made while a batch waits for a
connection join it, and the batch goes as one pipeline of ``EVALSHA`` (one round trip): the
group commit's pattern, so batches grow with the load and the cost per call falls. At most
``max_in_flight`` batches are on their way at once, each on a connection of its own. A call's
error (a Lua error) is its own; a connection error fails its batch's calls (each caller answers
503 or takes its fallback).
"""

from __future__ import annotations

import asyncio

__all__ = ["ScriptBatcher"]


class ScriptBatcher:
    """Runs named Lua scripts in batches on one asyncio Redis connection (created on first use,
    on the running loop).

    Parameters
    ----------
    url : str
    timeout_s : float
        Socket timeout of each round trip.
    scripts : dict
        Name -> Lua source.
    """

    def __init__(self, url: str, *, timeout_s: float, scripts: dict, max_in_flight: int = 8):
        self.url, self.timeout_s, self.scripts = url, timeout_s, dict(scripts)
        self.max_in_flight = max_in_flight
        self._client = None
        self._shas = None
        self._open: list | None = None  # the batch calls join until it gets a connection
        self._slots = None
        self._tasks: set = set()

    async def run(self, name: str, keys: list, args: list):
        """The script's answer (raises ``redis.RedisError``)."""
        loop = asyncio.get_running_loop()
        if self._client is None:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                        socket_connect_timeout=self.timeout_s)
            self._slots = asyncio.Semaphore(self.max_in_flight)
        future = loop.create_future()
        if self._open is None:
            self._open = []
            task = loop.create_task(self._send(self._open))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._open.append((name, keys, args, future))
        return await future

    async def _send(self, batch: list) -> None:
        import redis

        async with self._slots:  # while every connection is busy, the batch grows
            if self._open is batch:
                self._open = None
            try:
                answers = await self._execute(batch)
            except redis.RedisError as exc:
                answers = [exc] * len(batch)
            except Exception as exc:  # noqa: BLE001 - every caller gets an answer, whatever happened
                answers = [redis.RedisError(f"{type(exc).__name__}: {exc}")] * len(batch)
        for (*_, future), answer in zip(batch, answers):
            if not future.done():
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _execute(self, batch: list) -> list:
        import redis

        answers: list = [None] * len(batch)
        todo = list(range(len(batch)))
        for _ in range(2):  # a second time for the calls of scripts a restarted Redis forgot
            if self._shas is None:
                self._shas = {name: await self._client.script_load(src) for name, src in self.scripts.items()}
            pipe = self._client.pipeline(transaction=False)
            for i in todo:
                name, keys, args, _ = batch[i]
                pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            out = await pipe.execute(raise_on_error=False)
            for i, answer in zip(todo, out):
                answers[i] = answer
            todo = [i for i, answer in zip(todo, out) if isinstance(answer, redis.exceptions.NoScriptError)]
            if not todo:
                break
            self._shas = None
        return answers

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
