"""A replica's background poll: ``poll()`` every ``interval_s`` seconds in a daemon thread.

>>> class Count(Periodic):
...     thread_name = "count"
...     def __init__(self):
...         super().__init__(0.01)
...         self.n = 0
...     def poll(self):
...         self.n += 1
>>> c = Count(); c.start(); import time; time.sleep(0.1); c.stop(); c.n > 0
True
"""

from __future__ import annotations

import threading

__all__ = ["Periodic"]


class Periodic:
    """Runs :meth:`poll` every ``interval_s`` seconds (the first after one interval) until
    :meth:`stop`, which waits for the poll under way. Subclasses define ``poll`` (it must not
    raise) and may name their thread with ``thread_name``."""

    thread_name = "banditroute-periodic"

    def __init__(self, interval_s: float):
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread = None

    def poll(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
