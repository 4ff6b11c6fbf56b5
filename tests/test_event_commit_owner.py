"""An event row must not commit the rows of a writer owned by the service's group commit.

The service's ``LogWriter`` (``auto_flush=False``) is committed only by its group commit, which
acknowledges the requests whose rows it detached once their commit is durable. An event row (a
rollout command, a drift recalibration) used to flush that writer from its own thread: the
flush detached the other requests' rows too, so the committer found nothing to write and
acknowledged those requests while their rows were still being written (or after the flush had
failed and put them back). Now the event row waits in the buffer for the owner's commit.
"""

from __future__ import annotations

from banditroute import Profile, Router
from banditroute.logs.store import LogWriter


class Static:
    def probabilities(self, context):
        return {"large": 1.0}


def test_an_event_row_leaves_the_committers_rows_to_the_committer(tmp_path):
    router = Router([Profile("small"), Profile("large")], log_dir=None, seed=0)
    writer = LogWriter(tmp_path / "logs", durability="group", auto_flush=False, journal=True)
    router.use_log_writer(writer)
    router.decide({})  # a request's decision row, waiting for the group commit
    router.add_shadow("static", Static(), who="ops", why="a test")  # an event row
    detached = writer.detach()  # what the group commit takes next
    assert sorted((t.name, t.n) for t in detached) == [("decisions", 1), ("events", 1)]
    writer.commit_detached(detached)
    writer.close()


def test_a_writer_that_flushes_itself_still_writes_an_event_at_once(tmp_path):
    router = Router([Profile("small"), Profile("large")], log_dir=str(tmp_path / "logs"), seed=0)
    router.add_shadow("static", Static(), who="ops", why="a test")
    import polars as pl

    events = pl.read_parquet(f"{tmp_path}/logs/events/**/*.parquet")  # durable before close
    assert events.get_column("event").to_list() == ["shadow_start"]
    router.close()
