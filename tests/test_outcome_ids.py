"""Outcome ids: only canonical decision ids are known, and a late outcome is logged once.

Forged ids that name a real writer (leading zeros, non-ASCII digits, thousands of digits) are
refused like any unknown id (the library's UnknownDecisionError, the service's 404), never a
"late" row and never a 500; a retried late outcome is a duplicate, not a second row.
"""

import polars as pl
import pytest

import banditroute as br

pytest.importorskip("starlette", reason="the in-process tests use starlette's TestClient (dev extra)")

from test_service import AUTH, client, routes  # noqa: E402,F401  (fixtures)


def _forged(writer: str, digits: int = 5000) -> list[str]:
    return [f"{writer}-0001", f"{writer}-00", f"{writer}-\u0661", f"{writer}-\u00b2", f"{writer}-" + "9" * digits,
            f"{writer}-1" + "0" * 19, f"{writer}--1", f"{writer}-"]


def test_forged_ids_of_a_real_writer_are_unknown_in_the_library(tmp_path):
    router = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, seed=0)
    for _ in range(3):
        router.decide({})
    for forged in _forged(router.writer_id):
        with pytest.raises(br.UnknownDecisionError):
            router.record(forged, quality=1.0)
        assert not router.issued(forged)
    router.flush()
    assert br.scan_table(tmp_path, "outcomes").collect().height == 0
    assert router.issued(f"{router.writer_id}-0") and router.issued(f"{router.writer_id}-2")


def test_a_late_outcome_is_logged_once(tmp_path):
    router = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, seed=0, max_pending=2)
    first = router.decide({})
    router.decide_batch([{}] * 5)  # pushes the first decision out of the window
    assert router.record(first.id, quality=1.0) == "late"
    assert router.record(first.id, quality=0.0) == "duplicate"
    router.flush()
    rows = br.scan_table(tmp_path, "outcomes").collect()
    assert rows.get_column("status").to_list() == ["late"]


def test_forged_ids_are_404_through_the_service(client):  # noqa: F811
    d = client.post("/v1/decide", json={"context": {"task_type": "chat"}}, headers=AUTH).json()
    writer = d["id"].rpartition("-")[0]
    for forged in _forged(writer, digits=4000):  # (the test app's body limit is 4 KiB)
        r = client.post("/v1/outcome", json={"decision_id": forged, "quality": 1.0}, headers=AUTH)
        assert r.status_code in (404, 422), (forged[:40], r.status_code, r.text[:200])
        assert r.json()["error"]["field"] == "decision_id"
    ok = client.post("/v1/outcome", json={"decision_id": d["id"], "quality": 1.0}, headers=AUTH)
    assert ok.json()["status"] == "applied"
    logged = br.scan_table(client.app.state.service.router.config.log_dir, "outcomes").collect()
    assert logged.filter(pl.col("status") == "late").height == 0
