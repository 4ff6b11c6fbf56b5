"""The command store under ``/v1/rollout``, through the library: each command applied once, in
order, by every router on the store; ``Router.resume`` restores the stage they leave (the
candidates rebuilt from their stored routes files, a learning one re-taught the outcomes since it
started); a damaged record is skipped, not fatal."""

import time

import pytest

import banditroute as br
from banditroute.decide.commands import Candidate, FileCommands, RolloutCommand, new_command_id
from banditroute.decide.rollout_sync import RolloutConflictError, RolloutSync

TASKS = ["chat", "code"]
PROFILES = [br.Profile("small"), br.Profile("large")]
LARGE = '[router]\ntask_types = ["chat", "code"]\n[[profiles]]\nname = "large"\n'
BOTH = '[router]\ntask_types = ["chat", "code"]\nseed = 3\n[[profiles]]\nname = "small"\n[[profiles]]\nname = "large"\n'


def cmd(action, name=None, fraction=None, toml=None, who="alice", why="test"):
    return RolloutCommand(command_id=new_command_id(), action=action, name=name, fraction=fraction, who=who,
                          why=why, ts_us=time.time_ns() // 1000, replica="w",
                          candidate=None if toml is None else Candidate.of(toml))


def router(log_dir=None, seed=0):
    return br.Router(PROFILES, task_types=TASKS, log_dir=log_dir, seed=seed)


def test_every_router_applies_each_command_once_and_in_order(tmp_path):
    a, b = router(tmp_path), router(seed=1)
    sa, sb = RolloutSync(a, FileCommands(tmp_path), log_dir=tmp_path), RolloutSync(b, FileCommands(tmp_path))
    first = cmd("canary_start", "big", 0.4, LARGE)
    assert sa.submit(first) == "applied" and sa.submit(first) == "duplicate"
    assert sa.submit(cmd("shadow_start", "both", toml=BOTH)) == "applied"
    with pytest.raises(RolloutConflictError) as err:
        sb.submit(cmd("canary_start", "other", 0.1, LARGE))  # b catches up first: a canary is running
    assert err.value.field == "canary"
    assert sb.position == 2 and sb.sync() == 0  # caught up by the submit; nothing applied twice
    sb.submit(cmd("canary_fraction", fraction=0.6, why="more"))
    assert sa.sync() == 1 and sa.sync() == 0
    for s in (sa, sb):
        stage = s.stage()
        assert stage["canary"]["fraction"] == 0.6 and [x["name"] for x in stage["shadows"]] == ["both"]
        assert stage["position"] == 3 and stage["last_command"]["why"] == "more"
    events = br.scan_table(tmp_path, "events").collect()  # a logs; b has no log
    assert events.select("event", "policy", "fraction").rows() == [("canary_start", "big", 0.4),
                                                                   ("shadow_start", "both", None)]


def test_resume_restores_the_stage_and_reteaches_learning_candidates(tmp_path):
    live = router(tmp_path)
    sync = RolloutSync(live, FileCommands(tmp_path), log_dir=tmp_path)
    sync.submit(cmd("shadow_start", "gone", toml=LARGE))
    sync.submit(cmd("canary_start", "both", 0.3, BOTH))
    sync.submit(cmd("shadow_stop", "gone"))
    sync.submit(cmd("promote", "both", who="bob", why="gate passed"))
    for i in range(120):
        live.record(live.decide({"task_type": TASKS[i % 2]}).id, quality=float(i % 3 == 0))
    learned = sync.stage()["canary"]["n_updates"]
    assert learned == 120
    live_candidate = live.promote(who="bob", why="read the candidate")  # a library call: not stored
    live.close()
    (tmp_path / "_rollout" / "commands" / "0000000009.json").write_text("{}")  # past a gap: never applied

    fresh = router(tmp_path, seed=5)
    summary = fresh.resume()["rollout"]
    assert summary["canary"] == {"name": "both", "fraction": 1.0} and summary["shadows"] == []
    stage = RolloutSync(fresh, FileCommands(tmp_path)).stage()
    assert stage["canary"]["n_updates"] == learned and stage["position"] == 4
    assert stage["last_command"]["action"] == "promote" and stage["last_command"]["who"] == "bob"
    # the candidate re-learned what the live one had, in the same order: the same beliefs
    assert fresh.promote(who="bob", why="read the candidate").beliefs().equals(live_candidate.beliefs())


def test_a_damaged_record_is_skipped_and_the_rest_applied(tmp_path):
    a = router(tmp_path)
    sync = RolloutSync(a, FileCommands(tmp_path), log_dir=tmp_path)
    sync.submit(cmd("canary_start", "big", 0.2, LARGE))
    follower = RolloutSync(router(seed=2), FileCommands(tmp_path))
    (tmp_path / "_rollout" / "commands" / "0000000002.json").write_text('{"action": "rollback"')
    sync.store.append(3, cmd("canary_fraction", fraction=0.5))
    assert follower.sync() == 2 and follower.n_skipped == 1
    assert follower.stage()["canary"]["fraction"] == 0.5 and follower.position == 3


def test_a_stored_command_is_checked_like_input():
    good = cmd("canary_start", "big", 0.2, LARGE).to_data()
    good["candidate"]["toml"] += "\n# changed"
    with pytest.raises(br.ConfigError, match="candidate.sha256"):
        RolloutCommand.from_data(good)
    with pytest.raises(br.ConfigError, match="fraction"):
        cmd("rollback", fraction=0.1)
