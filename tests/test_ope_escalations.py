"""Escalated decisions in ope: by default only root decisions are rounds (``escalations="first"``).

banditroute's ``router.escalate`` logs a new decision (own id, own exact propensity over the
profiles not yet tried, ``parent_id`` = the decision it escalates) when an answer fails the
caller's verifier. The logs here are written with polars in banditroute's layout (the helpers of
``test_ope_logs``), not by a Router: a logging policy picks a first choice with known
propensities, the answer fails with a probability depending on the profile, the task type and a
hidden difficulty, and a failure is escalated among the untried profiles (own propensities,
own outcome), at most twice.

The statistical test reads 200 replications of 2,000 chains and checks that IPS and SNIPS on
the default rounds are unbiased for a candidate's first-choice value (truth and standard error
computed analytically), and that ``escalations="all"`` on the same data is detectably biased.
``BR_TEST_SEED=7 pytest`` sweeps its seed (as conftest's ``seed`` fixture does).
"""

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import ope
from ope import InvalidConfigError, LoggedFeedback
from ope.cli import main as cli_main
from ope.log_columns import read_log_columns
from test_ope_logs import DECISION_SCHEMA, OUTCOME_SCHEMA, T0, decision, outcome, write

PARENT = {"parent_id": pl.String}

# ---------------------------------------------------------------- the cascade simulated

PROFILES = ["small", "medium", "large"]
TASKS = ("chat", "code")
P_TASK = np.array([0.6, 0.4])
P_HARD = 0.4  # a hidden difficulty of the request, not in the logged context
SUCCESS = np.array([  # P(the answer passes the verifier) [task, hard, profile]
    [[0.85, 0.92, 0.97], [0.35, 0.55, 0.75]],
    [[0.65, 0.85, 0.93], [0.10, 0.30, 0.60]],
])
FIRST = np.array([[0.6, 0.3, 0.1], [0.5, 0.3, 0.2]])  # logging policy's first choice pi_0(a | task)
ESCALATE = np.array([1.0, 2.0, 4.0])  # an escalation: probabilities proportional to these, over the untried
TARGET = np.array([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])  # the candidate's first choice pi_e(a | task)
N_REPS, N_CHAINS = 200, 2000


def first_choice_truth():
    """The candidate's first-choice value and the per-round variances of IPS and SNIPS (exact)."""
    success = (1 - P_HARD) * SUCCESS[:, 0] + P_HARD * SUCCESS[:, 1]  # E[r | task, a] of a first answer
    value = float((P_TASK[:, None] * TARGET * success).sum())
    weighted = P_TASK[:, None] * TARGET**2 / FIRST  # E over roots of w^2 * (.) = sum p(x) pi_e^2 / pi_0 (.)
    var_ips = float((weighted * success).sum()) - value**2  # r in {0, 1}: r^2 = r
    var_snips = float((weighted * (success * (1 - 2 * value) + value**2)).sum())  # E[w^2 (r - V)^2], delta method
    return value, var_ips, var_snips


def _pick(rng, probs):
    """One index per row of ``probs`` (rows sum to 1; zero entries are never picked)."""
    cum = probs.cumsum(axis=1)
    return np.argmax(cum > rng.random(probs.shape[0])[:, None] * cum[:, -1:], axis=1)


def draw_cascades(rng, n_reps, n_chains):
    """The decisions of ``n_reps * n_chains`` chains, as columns (one row per decision, a chain's
    decisions in order): replication, chain, stage (0: the root), task, executed profile, the
    probability vector it was drawn from, and whether its answer passed (its reward)."""
    n = n_reps * n_chains
    task, hard = (rng.random(n) < P_TASK[1]).astype(int), (rng.random(n) < P_HARD).astype(int)
    tried = np.zeros((n, len(PROFILES)), dtype=bool)
    alive, probs, stages = np.arange(n), FIRST[task], []
    for stage in range(len(PROFILES)):
        action = _pick(rng, probs)
        passed = rng.random(alive.size) < SUCCESS[task[alive], hard[alive], action]
        stages.append((alive, np.full(alive.size, stage), action, probs, passed))
        tried[alive, action] = True
        alive = alive[~passed]
        if stage == len(PROFILES) - 1:  # every profile tried: the chain ends
            break
        weights = ESCALATE * ~tried[alive]  # escalate among the untried profiles
        probs = weights / weights.sum(axis=1, keepdims=True)
    chain, stage, action, probs, passed = (np.concatenate(c) for c in zip(*stages))
    order = np.lexsort((stage, chain))
    chain = chain[order]
    return {"rep": chain // n_chains, "chain": chain, "stage": stage[order], "task": task[chain],
            "action": action[order], "probs": probs[order], "passed": passed[order]}


def write_cascades(root, c):
    """Write ``c`` (see :func:`draw_cascades`) as banditroute logs: one writer per replication."""
    n = c["chain"].size
    seconds = (c["chain"] * 10 + c["stage"]).astype("timedelta64[s]")
    ts = pl.Series(np.datetime64(T0.replace(tzinfo=None), "us") + seconds).dt.replace_time_zone("UTC")
    cols = pl.DataFrame({"rep": c["rep"], "chain": c["chain"], "stage": c["stage"],
                         "task": np.asarray(TASKS)[c["task"]]}).select(
        pl.concat_str(pl.lit("r"), "rep", pl.lit("-c"), "chain", pl.lit("-"), "stage").alias("decision_id"),
        pl.concat_str(pl.lit("r"), "rep").alias("writer"),
        pl.concat_str(pl.lit('{"task_type": "'), "task", pl.lit('", "rep": '), "rep", pl.lit("}")).alias("context"),
        pl.col("stage"),
    ).with_columns(  # the previous decision of the chain is the parent
        pl.when(pl.col("stage") > 0).then(pl.col("decision_id").shift(1)).alias("parent_id"))
    decisions = pl.DataFrame({
        "decision_id": cols["decision_id"], "ts": ts, "writer": cols["writer"], "seq": c["chain"],
        "policy_version": "v1", "context": cols["context"],
        "task_types": pl.Series([list(TASKS)]).new_from_index(0, n),
        "task_probs": pl.Series([[0.5, 0.5]]).new_from_index(0, n),
        "profiles": pl.Series([PROFILES], dtype=pl.List(pl.String)).new_from_index(0, n),
        "probabilities": pl.Series(c["probs"]).cast(pl.List(pl.Float64)),
        "profile": np.asarray(PROFILES)[c["action"]], "propensity": c["probs"][np.arange(n), c["action"]],
        "excluded": "{}", "fallback_reason": None, "schema_version": 3, "parent_id": cols["parent_id"],
    }, schema={**DECISION_SCHEMA, **PARENT})
    reward = c["passed"].astype(float)
    outcomes = pl.DataFrame({
        "decision_id": cols["decision_id"], "ts": ts + dt.timedelta(seconds=1), "writer": cols["writer"],
        "seq": c["chain"], "quality": reward, "cost_usd": 0.001, "latency_ms": 500.0, "reward": reward,
        "status": "applied", "schema_version": 3,
    }, schema=OUTCOME_SCHEMA)
    for kind, frame in (("decisions", decisions), ("outcomes", outcomes)):
        for (writer,), part in frame.group_by("writer", maintain_order=True):
            write(root, kind, part.to_dict(), writer=writer, schema=PARENT if kind == "decisions" else None)


@pytest.fixture(scope="module")
def cascades(tmp_path_factory):
    """The simulated logs, read once per rule: (what was drawn, LogColumns "first", LogColumns "all")."""
    root = tmp_path_factory.mktemp("cascades")
    c = draw_cascades(np.random.default_rng(int(os.environ.get("BR_TEST_SEED", "0"))), N_REPS, N_CHAINS)
    write_cascades(root, c)
    cohorts = ("task_type", "rep")
    return c, read_log_columns(root, cohorts=cohorts), read_log_columns(root, cohorts=cohorts, escalations="all")


def per_replication(fb, estimator):
    """``estimator``'s value of the candidate (TARGET) on each replication's rounds of ``fb``."""
    reps = fb.cohorts["rep"].cast(pl.Int64).to_numpy()
    target = TARGET[(fb.cohorts["task_type"] == "code").to_numpy().astype(int)]
    order = np.argsort(reps, kind="stable")
    bounds = np.searchsorted(reps[order], np.arange(N_REPS + 1))
    values = []
    for r in range(N_REPS):
        idx = order[bounds[r]:bounds[r + 1]]
        values.append(estimator.estimate(fb.take(idx), target[idx], seed=0).value)
    return np.array(values)


# ---------------------------------------------------------------- statistics


def test_first_choice_rounds_are_unbiased_and_all_rounds_are_biased(cascades):
    c, first_columns, all_columns = cascades
    value, var_ips, var_snips = first_choice_truth()
    first, every = LoggedFeedback(**first_columns.as_kwargs()), LoggedFeedback(**all_columns.as_kwargs())
    n = N_REPS * N_CHAINS
    assert first.n_rounds == n  # one round per chain: its root
    assert every.n_rounds == c["chain"].size > n
    for estimator, var in ((ope.IPS(), var_ips), (ope.SNIPS(), var_snips)):
        est = per_replication(first, estimator)
        se = np.sqrt(var / n)  # of the mean of N_REPS estimates on N_CHAINS roots each
        assert abs(est.mean() - value) < 3 * se, (estimator.name, est.mean(), value, se)
        # the analytic spread is the estimates' spread: the sample sd is within 4 of its own s.e.
        ratio = est.std(ddof=1) / np.sqrt(var / N_CHAINS)
        assert abs(ratio - 1) < 4 / np.sqrt(2 * (N_REPS - 1)), (estimator.name, ratio)
        biased = per_replication(every, estimator)
        se_all = biased.std(ddof=1) / np.sqrt(N_REPS)
        assert abs(biased.mean() - value) > 5 * se_all, (estimator.name, biased.mean(), value, se_all)


def test_the_number_of_escalated_decisions_left_out_is_reported(cascades):
    c, first, every = cascades
    n_escalated = int((c["stage"] > 0).sum())
    assert (first.n_escalated, first.escalations) == (n_escalated, "first")
    assert (every.n_escalated, every.escalations) == (n_escalated, "all")
    assert first.actions.size == N_REPS * N_CHAINS and every.actions.size == c["chain"].size
    assert first.n_escalated_without_outcome == every.n_escalated_without_outcome == 0  # every answer recorded
    assert not {"n_escalated", "n_escalated_without_outcome", "escalations"} & set(first.as_kwargs())


# ---------------------------------------------------------------- hand-made logs

ABC = (["a", "b", "c"], [0.5, 0.3, 0.2])


@pytest.fixture
def chain_logs(tmp_path):
    """d0 (root, fails) -> d1 (escalates d0, fails) -> d2 (escalates d1); d3 a root of its own."""
    rows = [decision(0, *ABC, "a", extra={"parent_id": None, "schema_version": 3}),
            decision(1, ["a", "b", "c"], [0.0, 0.4, 0.6], "c", minutes=1, extra={"parent_id": "d0", "schema_version": 3}),
            decision(2, ["a", "b", "c"], [0.0, 1.0, 0.0], "b", minutes=2, extra={"parent_id": "d1", "schema_version": 3}),
            decision(3, *ABC, "b", minutes=3, extra={"parent_id": None, "schema_version": 3})]
    write(tmp_path, "decisions", rows, schema=PARENT)
    write(tmp_path, "outcomes", [outcome(0, 0.0), outcome(1, 0.0, minutes=2), outcome(2, 1.0, minutes=3),
                                 outcome(3, 1.0, minutes=4)])
    return tmp_path


def test_join_leaves_escalated_decisions_and_their_outcomes_out_by_default(chain_logs):
    joined = ope.join_logs(chain_logs).sort("row_index").collect()
    assert joined["decision_id"].to_list() == ["d0", "d3"]
    assert joined["row_index"].to_list() == [0, 3]  # positions in the scan, as before
    assert joined["reward"].to_list() == [0.0, 1.0]
    every = ope.join_logs(chain_logs, escalations="all").sort("row_index").collect()
    assert every["decision_id"].to_list() == ["d0", "d1", "d2", "d3"]
    assert every["parent_id"].to_list() == [None, "d0", "d1", None]
    fb = LoggedFeedback.from_logs(chain_logs)
    assert (fb.n_rounds, fb.rewards.tolist(), fb.propensities.tolist()) == (2, [0.0, 1.0], [0.5, 0.3])
    assert ope.feedback_from_logs(chain_logs, escalations="all").propensities.tolist() == [0.5, 0.6, 1.0, 0.3]
    # default_reward fills missing outcomes of roots only
    assert ope.join_logs(chain_logs, default_reward=0.0).collect().height == 2


def test_old_logs_without_parent_id_read_as_before(tmp_path):
    rows = [decision(i, *ABC, "abc"[i % 3], minutes=i) for i in range(6)]
    outs = [outcome(i, float(i % 2), minutes=i + 1) for i in range(5)]
    old, new = tmp_path / "v2", tmp_path / "v3"
    write(old, "decisions", rows)  # schema version 2: no parent_id column
    write(new, "decisions", [r | {"parent_id": None, "schema_version": 3} for r in rows], schema=PARENT)
    for root in (old, new):
        write(root, "outcomes", outs)
    assert "parent_id" not in pl.read_parquet_schema(next(old.glob("decisions/*/*.parquet")))
    a, b = (read_log_columns(root, cohorts=("profile",)) for root in (old, new))
    assert a.n_escalated == b.n_escalated == 0
    for name in ("actions", "rewards", "propensities", "logging_distribution"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    tables = []
    for root in (old, new):
        fb = LoggedFeedback.from_logs(root)
        tables.append(ope.evaluate(fb, {"u": ope.uniform(fb.n_rounds, 3)}, [ope.IPS(), ope.SNIPS()], seed=0))
    assert_frame_equal(tables[0], tables[1], check_exact=True)
    assert tables[0]["value"].to_list()[0] == pytest.approx(np.mean([(1 / 3) / p * r for p, r in zip(
        [0.5, 0.3, 0.2, 0.5, 0.3], [0.0, 1.0, 0.0, 1.0, 0.0])]))
    joined = ope.join_logs(old).collect()
    assert joined["parent_id"].null_count() == joined.height == 5  # read as null: every decision a root


def test_a_newer_file_parent_id_counts_after_an_older_file_without_it(tmp_path):
    # the scan takes its schema from the first (oldest) file: parent_id must not be dropped there
    write(tmp_path, "decisions", [decision(0, *ABC, "a")], date="2025-01-01")
    write(tmp_path, "decisions", [decision(1, *ABC, "b", extra={"parent_id": None, "schema_version": 3}),
                                  decision(2, ["a", "b", "c"], [0.0, 0.4, 0.6], "c",
                                           extra={"parent_id": "d1", "schema_version": 3})],
          date="2025-01-02", seq=1, schema=PARENT)
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0), outcome(2, 1.0)])
    assert LoggedFeedback.from_logs(tmp_path).rewards.tolist() == [1.0, 0.0]
    assert LoggedFeedback.from_logs(tmp_path, escalations="all").n_rounds == 3
    assert read_log_columns(tmp_path).n_escalated == 1


def test_an_escalated_decision_without_an_outcome_is_counted(tmp_path, capsys):
    # the caller escalated d0 (its answer failed) but never recorded that outcome: d0 is no round
    rows = [decision(0, *ABC, "a", extra={"parent_id": None, "schema_version": 3}),
            decision(1, ["a", "b", "c"], [0.0, 0.4, 0.6], "c", minutes=1, extra={"parent_id": "d0", "schema_version": 3}),
            decision(2, *ABC, "b", minutes=3, extra={"parent_id": None, "schema_version": 3})]
    write(tmp_path, "decisions", rows, schema=PARENT)
    write(tmp_path, "outcomes", [outcome(1, 1.0, minutes=2), outcome(2, 1.0, minutes=4)])
    first = read_log_columns(tmp_path)
    assert (first.rewards.tolist(), first.n_escalated, first.n_escalated_without_outcome) == ([1.0], 1, 1)
    assert read_log_columns(tmp_path, escalations="all").n_escalated_without_outcome == 1
    assert read_log_columns(tmp_path, default_reward=0.0).n_escalated_without_outcome == 0
    code, stdout, stderr = _main(capsys, tmp_path, "--policy", "u=uniform")
    assert code == 0, stderr
    assert "warning: 1 decision(s) were escalated (their answer failed) but have no counted outcome" in stdout


@pytest.mark.parametrize("value", ["root", "First", None, ["first"]])
def test_an_invalid_escalations_value_is_a_config_error_naming_it(value):
    for read in (ope.join_logs, ope.feedback_from_logs, LoggedFeedback.from_logs, read_log_columns):
        with pytest.raises(InvalidConfigError, match=r"^escalations must be one of \('first', 'all'\), got ") as info:
            read("/nonexistent", escalations=value)
        assert info.value.field == "escalations" and repr(value) in str(info.value)


# ---------------------------------------------------------------- the command line


def _cli(*args):
    """``python -m ope ARGS`` in a subprocess, where the user meets it."""
    return subprocess.run([sys.executable, "-m", "ope", *map(str, args)], capture_output=True, text=True, check=False)


def _main(capsys, *args):
    """The same command line in this process (faster): exit code, stdout, stderr."""
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:  # argparse refusing an argument
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_escalations_flag(chain_logs, tmp_path, capsys):
    out = tmp_path / "first.json"
    default = _cli(chain_logs, "--policy", "logging=logging", "--json", out)
    assert default.returncode == 0, default.stderr
    assert ("note: 2 escalated decision(s) (parent_id set) left out with their outcomes: "
            "the rounds are first choices (--escalations first)") in default.stdout
    rows = {r["estimator"]: r for r in json.loads(out.read_text())}
    assert rows["IPS"]["n"] == 2 and rows["IPS"]["value"] == pytest.approx(0.5)  # on-policy: the roots' mean
    code, stdout, stderr = _main(capsys, chain_logs, "--policy", "logging=logging", "--escalations", "all", "--json", "-")
    assert code == 0, stderr
    assert {r["estimator"]: r["n"] for r in json.loads(stdout)} == {"IPS": 4, "SNIPS": 4}
    assert "warning: 2 escalated decision(s) (parent_id set) are rounds (--escalations all)" in stderr
    code, _, stderr = _main(capsys, chain_logs, "--escalations", "root")
    assert code == 2 and "--escalations" in stderr and "'root'" in stderr


def test_cli_says_nothing_about_escalations_on_logs_without_them(tmp_path, capsys):
    write(tmp_path, "decisions", [decision(0, *ABC, "a"), decision(1, *ABC, "b")])
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0)])
    code, stdout, stderr = _main(capsys, tmp_path, "--policy", "u=uniform")
    assert code == 0, stderr
    assert "escalat" not in stdout + stderr
