"""Reading the logs while a writer adds parts: one reading sees one set of files.

``LoggedFeedback.from_logs`` scans the decisions several times (the action space, the row
count, the join per partition); a part written in between used to be counted by one scan and
missed by another (an IndexError now and then under a live service). Each reading now takes
one snapshot of the file list.
"""

import ope
import ope.log_columns as log_columns

import banditroute as br

PROFILES = [br.Profile("a"), br.Profile("b")]


def _log(log_dir, n, seed):
    router = br.Router(PROFILES, log_dir=log_dir, seed=seed)
    for d in router.decide_batch([{}] * n):
        router.record(d.id, quality=1.0)
    router.close()


def test_from_logs_reads_one_snapshot_while_a_writer_adds_parts(tmp_path, monkeypatch):
    _log(tmp_path, 50, seed=0)
    real = log_columns.action_space

    def action_space_then_a_writer_adds_parts(log_dir):
        names = real(log_dir)
        _log(tmp_path, 30, seed=1)  # another writer's parts land between two scans of one reading
        return names

    monkeypatch.setattr(log_columns, "action_space", action_space_then_a_writer_adds_parts)
    fb = ope.LoggedFeedback.from_logs(tmp_path)
    assert fb.n_rounds == 50  # what was there when the reading began, consistently
    monkeypatch.undo()
    assert ope.LoggedFeedback.from_logs(tmp_path).n_rounds == 80
