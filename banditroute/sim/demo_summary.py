"""The demo's printing: the plain-text summary of a :class:`~banditroute.sim.demo_result.DemoResult`,
and the progress of its phases on stderr.

:func:`format_summary` turns the numbers into the tables ``banditroute demo`` prints: the
static table, reward per phase and per window, routing shares per task type, the events, the
routing mechanisms (:func:`mechanism_lines`: the verifier cascade, the cost the router learned,
the bounded onboarding of the late profile, the provider failures and their cooldowns), and
(when the run evaluated) the candidates, the gate's verdict and the report's path; with
logs, the routes file and the commands that use it (:func:`~banditroute.sim.demo_runs.follow_up_commands`).

:class:`PhaseLog` writes, while the demo runs, a line when each phase starts and when it ends
(with its duration), and in between a live tqdm bar on a terminal, or, on a file or a pipe, a
plain line whenever the phase has written nothing for :data:`HEARTBEAT_S` seconds (with its
percentage when its work is counted): no carriage returns in a log, and no phase silent for
more than about 1.5 s. tqdm (no dependencies of its own, about 80 KB) draws the terminal bar
(rate, ETA, terminal width, redraws); the plain lines need no library. The summary's tables
stay plain text: they go to files and pipes as often as to a terminal.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from .demo_evaluation import DEMO_GUARDRAILS
from .demo_measures import SHARE_OFF, SHARE_ON
from .demo_result import DemoResult
from .demo_runs import follow_up_commands

__all__ = ["format_summary", "mechanism_lines", "PhaseLog", "HEARTBEAT_S"]

#: Seconds a phase may write nothing on a stream that is not a terminal; a progress line then.
HEARTBEAT_S = 1.5


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def mechanism_lines(r: DemoResult) -> list[str]:
    """The lines on the verifier cascade, the learned cost, the bounded onboarding and the
    provider failures (empty when there is none of them).

    >>> from banditroute.sim import run_demo
    >>> r = run_demo(n_requests=1_000, seed=0, log_dir=None, progress=False, out=None)
    >>> [line.split(":")[0].split(" (")[0].strip() for line in mechanism_lines(r)]
    ['', 'Routing mechanisms', 'cascade', 'cost per request', 'learned cost', 'onboarding',
     'provider failures', 'cooldown']
    """
    lines = []
    c = r.cascade
    if c is not None and c["n_requests"]:
        lines += [f"  cascade: {1 - c['first_pass_rate']:.1%} of first answers failed the verifier; after "
                  f"escalation {c['pass_rate']:.1%} passed ({c['calls_per_request']:.2f} calls per request, "
                  f"max_escalations {c['max_escalations']})",
                  f"    cost per request: ${c['cost_per_request_usd']:.4f} with escalations, "
                  f"${c['first_cost_per_request_usd']:.4f} for the first answers alone"]
    learned = [row for row in r.learned_costs if row["learned_cost_usd"] is not None]
    if learned:
        row = learned[0]  # the profile whose learned cost is furthest from its configured one
        lines.append(f"  learned cost: {row['profile']} ${row['learned_cost_usd']:.4f} per call (configured "
                     f"${row['configured_cost_usd']:.4f}; true mean in the simulator ${row['true_cost_usd']:.4f})")
    lines += _onboarding_lines(r) + _failure_lines(r)
    return ["", "Routing mechanisms"] + lines if lines else []


def _onboarding_lines(r: DemoResult) -> list[str]:
    lines = []
    for o in r.onboardings:
        if "graduated_at" not in o:
            continue
        end = (f"graduated at request {o['graduated_at']:,}" if o["graduated_at"] is not None else
               f"still capped at the end of the run ({o['n_outcomes']:.0f} outcomes)")
        lines.append(f"  onboarding: {o['profile']} joined at request {o['joined_at']:,}, capped at "
                     f"{o['max_share']:.0%} of each request until {o['min_outcomes']:,} outcomes; {end}"
                     + (f" (events in {r.log_dir}/events)" if o["from_log"] else ""))
    return lines


def _failure_lines(r: DemoResult) -> list[str]:
    lines = []
    for f in r.failures:
        where = ("down at requests " + ", ".join(f"{a:,}-{b - 1:,} ({e})" for a, b, e in f["outages"])
                 if f["outages"] else "failing at random")
        lines.append(f"  provider failures: {f['profile']} {where}: {f['n_failed']:,} failed calls, "
                     "recorded with record(id, error=...)")
        if f["cooldown_s"] is not None:
            logged = f" (events in {r.log_dir}/events)" if f["from_log"] else ""
            late = f", {f['overruns']} of them ended early (machine too slow)" if f["overruns"] else ""
            lines.append(f"    cooldown ({f['errors']} failures in a row -> out for {f['cooldown_s']:g} s, the time of "
                         f"{f['cooldown_requests']:,} requests here): {len(f['cooldown_at']):,} cooldown "
                         f"events{logged} kept {f['profile']} out of {f['n_excluded']:,} requests{late}; "
                         f"availability now {f['availability']:.1%}")
    return lines


def format_summary(r: DemoResult) -> str:
    """The plain-text summary :func:`~banditroute.sim.demo.run_demo` prints.

    >>> from banditroute.sim import run_demo
    >>> r = run_demo(n_requests=1_000, seed=0, log_dir=None, progress=False, out=None)
    >>> print(format_summary(r).splitlines()[0])
    banditroute demo: 1,000 requests, seed 0
    """
    o = r.objective
    lines = [
        f"banditroute demo: {r.n_requests:,} requests, seed {r.seed}",
        f"objective: reward = {o['quality']:g}*quality - {o['cost']:g}*cost_usd - {o['latency']:g}*latency_ms",
        f"router: Thompson sampling, discount {r.discount:g}, "
        f"{'drift-triggered recalibration, ' if r.drift else ''}exploration {r.exploration:g}, "
        f"batches of {r.batch_size} concurrent requests, outcomes delayed",
        f"logs: {r.log_dir or '(not written)'}    wall time: {r.wall_time_s:.1f} s    "
        f"record(): " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.record_status.items())),
        "",
        "Static routing table (pre-deployment benchmark of the initial profiles, never updated):",
        "  " + ", ".join(f"{t} -> {p}" for t, p in r.static_table.items()),
        "",
        "Mean reward per request (expected reward" + (" of the first choice, before any escalation"
                                                      if r.cascade else "") + "; 'realised' = observed outcomes)",
    ]
    head = f"  {'phase':<34}{'requests':>15}{'router':>8}{'realised':>9}{'oracle':>8}{'static':>8}" \
           f"{'vs oracle':>10}{'vs static':>10}{'regret':>9}"
    lines.append(head)
    for p in r.phases:
        lines.append(f"  {p['name']:<34}{p['start']:>7,}-{p['stop']:<7,}{p['router']:>8.3f}"
                     f"{p['router_realised']:>9.3f}{p['oracle']:>8.3f}{p['static']:>8.3f}"
                     f"{_fmt(p['ratio_to_oracle'], '.1%'):>10}{_fmt(p['ratio_to_static'], '.1%'):>10}"
                     f"{p['regret']:>9.1f}")
    lines += ["", "Per window", f"  {'requests':<17}{'router':>8}{'oracle':>8}{'static':>8}"
              f"{'vs oracle':>10}{'cum. regret':>12}"]
    for w in r.windows:
        lines.append(f"  {w['start']:>7,}-{w['stop']:<9,}{w['router']:>8.3f}{w['oracle']:>8.3f}"
                     f"{w['static']:>8.3f}{_fmt(w['ratio_to_oracle'], '.1%'):>10}{w['cumulative_regret']:>12.1f}")
    lines += ["", "Routing share per task type (% of that task type's requests in the window "
                  "first routed to each profile)"]
    width = max(8, *(len(p) + 2 for p in r.profiles))
    for t in r.task_types:
        lines.append(f"  {t:<17}" + "".join(f"{p:>{width}}" for p in r.profiles))
        for w in r.windows:
            cells = "".join(f"{_fmt(None if s is None else 100 * s, '.0f'):>{width}}"
                            for s in w["share"][t].values())
            lines.append(f"    {w['start']:>6,}-{w['stop']:<7,}" + cells)
    lines += ["", "Events"]
    for d in r.degradations:
        lines.append(f"  {d['profile']} degrades on {d['task_type']} at request {d['at_request']:,} "
                     f"(share there before: {_fmt(d['share_before'], '.0%')})")
        if d["reroute_requests"] is None:
            lines.append(f"    share never fell below {SHARE_OFF:.0%} ({d['n_affected']:,} {d['task_type']} requests)")
        else:
            lines.append(f"    routed around after {d['reroute_requests']:,} {d['task_type']} requests "
                         f"({d['reroute_all_requests']:,} requests overall): share < {SHARE_OFF:.0%}, "
                         f"then {_fmt(d['share_after_reroute'], '.1%')} on average")
    for b in r.onboardings:
        where = ", ".join(b["best_for"]) or "(no task type)"
        lines.append(f"  {b['profile']} joins at request {b['at_request']:,}; best for {where}")
        if b["onboarding_requests"] is None:
            lines.append(f"    never reached a {SHARE_ON:.0%} share there ({b['n_best']:,} requests)")
        else:
            lines.append(f"    onboarded after {b['onboarding_requests']:,} requests of those task types "
                         f"({b['onboarding_all_requests']:,} overall): share >= {SHARE_ON:.0%}; "
                         f"final share {_fmt(b['final_share'], '.0%')}")
    if not r.degradations and not r.onboardings:
        lines.append("  (none: stationary scenario)")
    lines += mechanism_lines(r)
    if r.candidates:
        lines += ["", f"Candidates evaluated off-policy on the logged traffic ({r.evaluation_time_s:.1f} s); "
                      "true value = simulator's expected reward of the candidate on the logged requests"]
        if any(c["policy"] == "ucb" for c in r.candidates):
            lines.append("  (ucb: this router with policy=\"ucb\", learning as it goes: each round scored before "
                         "it learns that round)")
        lines += [
                  f"  {'policy':<14}{'estimator':<10}{'estimate':>9}  {'95% interval':<19}{'true':>8}  covered"]
        for c in r.candidates:
            covered = "yes" if c["ci_low"] <= c["truth"] <= c["ci_high"] else "no"
            lines.append(f"  {c['policy']:<14}{c['estimator']:<10}{c['value']:>9.4f}  "
                         f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]{c['truth']:>9.4f}  {covered}")
    if r.gate is not None:
        lines += ["", f"Promotion gate: {r.gate['candidate']} vs {r.gate['baseline']} (per task type; guardrails "
                      + ", ".join(f"{k} {v:g}" for k, v in DEMO_GUARDRAILS.items()) + "): "
                      + ("PROMOTE" if r.gate["promote"] else "REFUSE")]
        lines += [f"  - {reason}" for reason in r.gate["reasons"]]
    if r.report_path:
        lines += ["", f"Report: {r.report_path}"]
    if r.routes_path and r.log_dir:
        lines += ["", f"Routes file of this run: {r.routes_path}", "Next, on this run's logs and routes file:"]
        lines += [f"  {c}" for c in follow_up_commands(log_dir=r.log_dir, routes=r.routes_path,
                                                       shadow=r.shadows[0] if r.shadows else None)]
    return "\n".join(lines) + "\n"


def _ignore(done: int) -> None:
    """The ``advance`` of a silent :class:`PhaseLog`."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PhaseLog:
    """The demo's phases on ``stream`` (stderr): a line when each starts and ends, progress between.

    :meth:`phase` is a context manager: it writes ``NAME: started (DETAIL)``, then, on a
    terminal, a live tqdm bar (counted work: percentage, rate and ETA; otherwise the elapsed
    time), erased when the phase ends; on anything else (a file, a pipe), plain lines only: one
    whenever the phase has written nothing for ``heartbeat_s`` seconds (``NAME: 42% (21,000/50,000
    requests), 8.1 s`` for counted work, ``NAME: running, 8.1 s`` otherwise). It ends with ``NAME:
    done in 8.1 s`` (``stopped after`` when the phase raised). Every line starts with the time
    since the log was made. ``stream=None``: nothing is written (and no thread started).

    Parameters
    ----------
    stream : text stream or None
        Where the lines go.
    heartbeat_s : float
        Longest a phase stays silent on a stream that is not a terminal.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> log = PhaseLog(stream)
    >>> with log.phase("simulation", "2 batches", total=32, unit="requests") as advance:
    ...     advance(16)
    ...     advance(32)
    >>> print(stream.getvalue(), end="")
    [demo ...s] simulation: started (2 batches)
    [demo ...s] simulation: done in ... s (32/32 requests)
    """

    def __init__(self, stream: TextIO | None, *, heartbeat_s: float = HEARTBEAT_S):
        self.stream, self.heartbeat_s = stream, heartbeat_s
        self.live = stream is not None and _is_terminal(stream)
        self._t0 = self._last = time.perf_counter()
        self._lock = threading.Lock()

    def _line(self, text: Callable[[float], str] | str, *, if_silent_for: float = 0.0) -> None:
        """Write ``text`` (or ``text(now)``), unless a line was written less than ``if_silent_for`` s ago."""
        with self._lock:
            now = time.perf_counter()
            if now - self._last < if_silent_for:
                return
            self._last = now
            self.stream.write(f"[demo {now - self._t0:6.1f}s] {text if isinstance(text, str) else text(now)}\n")
            self.stream.flush()

    @contextmanager
    def phase(self, name: str, detail: str = "", *, total: int | None = None,
              unit: str = "") -> Iterator[Callable[[int], None]]:
        """Report the phase ``name`` while the block runs; yields ``advance(done)`` (work done so far,
        out of ``total``; a no-op for a phase that is not counted)."""
        if self.stream is None:
            yield _ignore
            return
        self._line(f"{name}: started" + (f" ({detail})" if detail else ""))
        t, done = time.perf_counter(), [0]
        bar = None
        if self.live:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=name, unit=f" {unit}" if unit else "it", file=self.stream, leave=False,
                       dynamic_ncols=True, bar_format=None if total else "{desc}: running, {elapsed}")

        def advance(n: int) -> None:
            if bar is not None:
                bar.update(n - done[0])
            done[0] = n

        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(name, t, total, unit, done, bar, stop), daemon=True,
                                name=f"demo progress: {name}")
        beat.start()
        end = "done in"
        try:
            yield advance
        except BaseException:
            end = "stopped after"
            raise
        finally:
            stop.set()
            beat.join()
            if bar is not None:
                bar.close()
            count = f" ({done[0]:,}/{total:,} {unit})" if total else ""
            self._line(f"{name}: {end} {time.perf_counter() - t:.1f} s{count}")

    def _beat(self, name, t, total, unit, done, bar, stop) -> None:
        """The phase's heartbeat: keeps the bar's clock ticking, or writes a line after ``heartbeat_s``
        of silence (it sleeps until then)."""
        while True:
            wait = 0.5 if bar is not None else max(0.01, self._last + self.heartbeat_s - time.perf_counter())
            if stop.wait(wait):
                return
            if bar is not None:
                bar.refresh()
                continue
            n = done[0]
            where = f"{n / total:.0%} ({n:,}/{total:,} {unit})" if total else "running"
            self._line(lambda now: f"{name}: {where}, {now - t:.1f} s", if_silent_for=self.heartbeat_s)
