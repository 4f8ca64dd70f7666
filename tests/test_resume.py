"""A restarted daemon takes up its policy's history from its own trace (autoscaler/resume.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from autoscaler.config import Resolved, parse_config
from autoscaler.daemon import Autoscaler, PolicyFn
from autoscaler.errors import ConfigError
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision
from autoscaler.policy.state import PolicyContext, PolicyState, record_outcome, startup_of
from autoscaler.resume import resume_from_prometheus, resume_from_trace
from autoscaler.sim.replay import TraceCollector, replay_daemon
from autoscaler.telemetry.prometheus import PrometheusModelSource
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.trace import (
    TraceFormatError,
    TraceWriter,
    header,
    iter_trace,
    iter_trace_since,
    rotated,
    snapshot_to_json,
)
from tests.test_cli_contract import cli, closed_port, write_config
from tests.test_sim_replay import telemetry

EPOCH = 1_767_225_600.0


def write(path: Path, snaps: list[Snapshot], tail: str = "") -> int:
    """A trace of `snaps`, then `tail` as it is; returns the byte where the tail starts."""
    with TraceWriter(path) as w:
        for s in snaps:
            w.write(s)
    at = path.stat().st_size
    with path.open("a") as f:
        f.write(tail)
    return at


BAD_LINE = '{"taken_at": 1767226000.0, "models": 7}\n'


def ticked(
    resolved: Resolved, snaps: list[Snapshot], daemon: Autoscaler | None = None
) -> tuple[Autoscaler, list[dict[str, Any]]]:
    """A recommend-mode daemon ticked once per snapshot; its decisions as JSON."""
    collector = TraceCollector()
    if daemon is None:
        daemon = replay_daemon(resolved, collector, snaps[0].taken_at)
    else:
        daemon.collector = collector
    out: list[dict[str, Any]] = []
    for s in snaps:
        collector.current = s
        out += [d.to_json() for d in daemon.tick(s.taken_at).decisions]
    return daemon, out


@pytest.fixture(scope="module")
def recorded() -> tuple[list[Snapshot], Resolved]:
    return telemetry(models=3, minutes=20)


# -- reading the end of a trace ----------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    [
        -math.inf,  # before every snapshot: all of them
        EPOCH + 5.0,  # the first one exactly
        EPOCH + 35.0,  # a snapshot's own time: it is included
        EPOCH + 37.5,  # between two: from the next
        EPOCH + 600.0,  # the middle
        EPOCH + 1200.0,  # the last one exactly
        EPOCH + 1200.5,  # after the last: none
    ],
)
def test_the_end_of_a_trace_is_what_reading_it_all_would_give(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved], since: float
) -> None:
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    write(path, snaps)
    reference = [s for s in iter_trace(path) if s.taken_at >= since]  # the slow way
    assert list(iter_trace_since(path, since)) == reference
    assert len(reference) == sum(1 for s in snaps if s.taken_at >= since)


def test_lines_in_another_writers_key_order_are_found_too(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    """A line that does not start with taken_at is parsed whole to find its time."""
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    body = [json.dumps(snapshot_to_json(s), sort_keys=True) for s in snaps]
    lines = [json.dumps(header()), *body]
    assert not lines[1].startswith('{"taken_at"')
    path.write_text("\n".join(lines) + "\n")
    since = snaps[100].taken_at
    assert [s.taken_at for s in iter_trace_since(path, since)] == [s.taken_at for s in snaps[100:]]


def test_a_last_line_cut_short_is_skipped_with_a_warning(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    write(path, snaps[:50], json.dumps(snapshot_to_json(snaps[50]))[:200])  # killed mid-line
    warnings: list[str] = []
    got = list(iter_trace_since(path, snaps[40].taken_at, warnings))
    assert [s.taken_at for s in got] == [s.taken_at for s in snaps[40:50]]
    assert len(warnings) == 1 and "cut short" in warnings[0] and str(path) in warnings[0]


def test_a_bad_line_names_the_file_and_the_byte(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    at = write(path, snaps[:10], BAD_LINE)
    with pytest.raises(TraceFormatError, match=rf"{path} \(byte {at}\): bad snapshot line"):
        list(iter_trace_since(path, snaps[5].taken_at))


# -- the daemon warmed on what it saw ---------------------------------------------------------


def test_a_daemon_warmed_on_its_snapshots_decides_as_one_that_never_stopped(
    recorded: tuple[list[Snapshot], Resolved],
) -> None:
    """Warm on the first 15 minutes, tick the last 5: every decision as the uninterrupted one's."""
    snaps, resolved = recorded
    k = 180  # 15 minutes at 5 s
    never_stopped, decided = ticked(resolved, snaps)
    after = decided[3 * k :]

    restarted = replay_daemon(resolved, TraceCollector(), snaps[k].taken_at)
    assert restarted.warm(snaps[:k]) == k
    _, resumed = ticked(resolved, snaps[k:], restarted)
    assert resumed == after
    assert restarted.state == never_stopped.state
    # ... the service times measured from the compute counters included
    measured = [st.demand.service_s for st in restarted.state.models.values()]
    assert measured and all(s is not None for s in measured), measured

    _, cold = ticked(resolved, snaps[k:])  # the same ticks from an empty state
    assert cold != after
    first = {d["model"]: d for d in cold[:3]}
    assert {d["rule"] for d in first.values()} == {"invalid_telemetry"}  # no window yet


def test_warm_learns_with_the_policy_it_is_given(
    recorded: tuple[list[Snapshot], Resolved],
) -> None:
    """`run` warms with `decide` itself where the daemon's policy wraps it (fleet room advice)."""
    snaps, resolved = recorded
    calls = {"own": 0, "given": 0}

    def counted(name: str) -> PolicyFn:
        def fn(ctx: PolicyContext, state: Any) -> tuple[list[Decision], Any]:
            calls[name] += 1
            return decide(ctx, state)

        return fn

    daemon = replay_daemon(resolved, TraceCollector(), snaps[0].taken_at)
    daemon.policy_fn = counted("own")
    assert daemon.warm(snaps[:10], counted("given")) == 10
    assert calls == {"own": 0, "given": 10}
    _, _ = ticked(resolved, snaps[10:12], daemon)
    assert calls == {"own": 2, "given": 10}  # the daemon's own policy is left in place


def test_warm_skips_a_snapshot_not_later_than_the_one_before(
    recorded: tuple[list[Snapshot], Resolved],
) -> None:
    snaps, resolved = recorded
    daemon = replay_daemon(resolved, TraceCollector(), snaps[0].taken_at)
    assert daemon.warm([snaps[0], snaps[2], snaps[1], snaps[2], snaps[3]]) == 3


def test_resume_reads_the_last_demand_history_of_the_trace(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    """demand_history_s 600 s at `now` = the last snapshot + 5 s: the last 10 minutes only."""
    snaps, resolved = recorded
    pol = resolved.policy.model_copy(update={"demand_history_s": 600})
    resolved = resolved.model_copy(update={"policy": pol})
    path = tmp_path / "t.jsonl"
    write(path, snaps)
    now = snaps[-1].taken_at + 5.0
    daemon = replay_daemon(resolved, TraceCollector(), now)
    r = resume_from_trace(daemon, path, now)
    used = [s for s in snaps if s.taken_at >= now - 600]
    assert (r.snapshots, r.first_at, r.last_at) == (len(used), used[0].taken_at, used[-1].taken_at)
    assert r.warnings == () and r.why_none == ""
    reference, _ = ticked(resolved, used)
    assert daemon.state == reference.state
    fields = r.to_log()
    assert fields["snapshots"] == len(used) and fields["last_age_s"] == 5.0


def test_measured_start_ups_are_recorded_and_a_restart_takes_them_up(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    """Start-ups go into the record when they change and every demand_history_s / 2 (300 s
    here), so the last 600 s that a restart reads hold them though none was measured then."""
    snaps, resolved = recorded
    pol = resolved.policy.model_copy(update={"demand_history_s": 600})
    resolved = resolved.model_copy(update={"policy": pol})
    name = sorted(resolved.targets)[0]
    path = tmp_path / "t.jsonl"
    daemon = replay_daemon(resolved, TraceCollector(), snaps[0].taken_at)
    measured = {30: 8.25, 100: 9.5}  # tick → a scale-up applied then, and how long it took
    with TraceWriter(path) as w:
        daemon.recorder = w.write
        for i, s in enumerate(snaps):
            if i in measured:  # what the daemon's `_record` feeds back when an apply ends
                daemon.state = record_outcome(
                    daemon.state, name, s.taken_at, True, pol, startup_s=measured[i]
                )
            ticked(resolved, [s], daemon)
    carried = [(round(s.taken_at - EPOCH), s.startups_s) for s in iter_trace(path) if s.startups_s]
    # tick i is taken at EPOCH + 5 (i + 1): the changes at 155 s and 505 s, then every 300 s
    assert carried == [
        (155, {name: (8.25,)}),
        (455, {name: (8.25,)}),
        (505, {name: (8.25, 9.5)}),
        (805, {name: (8.25, 9.5)}),
        (1105, {name: (8.25, 9.5)}),
    ]

    now = snaps[-1].taken_at + 5.0
    restarted = replay_daemon(resolved, TraceCollector(), now)
    assert resume_from_trace(restarted, path, now).first_at == EPOCH + 605.0  # after 505 s
    assert isinstance(restarted.state, PolicyState)
    startup = startup_of(resolved.targets[name], restarted.state.get(name))
    assert (startup.source, startup.seconds, startup.samples) == ("measured", 8.875, 2)
    assert all(not st.startups_s for m, st in restarted.state.models.items() if m != name)
    # ... and its own record carries them from its first tick on, wherever it writes
    rerecorded: list[Snapshot] = []
    restarted.recorder = rerecorded.append
    ticked(resolved, [dataclasses.replace(snaps[-1], taken_at=now)], restarted)
    assert rerecorded[0].startups_s == {name: (8.25, 9.5)}

    # a model configured then and not now is left behind
    gone = [dataclasses.replace(snaps[-1], taken_at=now + 5, startups_s={"removed-model": (5.0,)})]
    assert restarted.warm(gone) == 1 and "removed-model" not in restarted.state.models

    cold = replay_daemon(resolved, TraceCollector(), now)  # the same ticks without a record
    cold.warm([dataclasses.replace(s, startups_s=None) for s in iter_trace(path)])
    assert startup_of(resolved.targets[name], cold.state.get(name)).source != "measured"


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("missing", "no trace at"),
        ("header only", "nothing in"),
        ("too old", "from the last 6000 s (demand_history_s)"),
        ("not a trace", "not a triton-autoscaler-trace file"),
    ],
)
def test_resume_starts_cold_and_says_why(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved], case: str, why: str
) -> None:
    snaps, resolved = recorded
    path = tmp_path / "t.jsonl"
    now = snaps[-1].taken_at + 5.0
    if case == "header only":
        TraceWriter(path).close()
    elif case == "too old":
        write(path, snaps)
        now += resolved.policy.history_s
    elif case == "not a trace":
        path.write_text("time,rps\n0,1\n")
    daemon = replay_daemon(resolved, TraceCollector(), now)
    r = resume_from_trace(daemon, path, now)
    assert r.snapshots == 0 and why in r.why_none
    assert r.to_log()["snapshots"] == 0
    assert not daemon.state.models  # nothing learnt


def test_resume_keeps_what_it_read_before_a_bad_line_and_skips_the_future(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    snaps, resolved = recorded
    path = tmp_path / "t.jsonl"
    write(path, snaps[:100], BAD_LINE)
    daemon = replay_daemon(resolved, TraceCollector(), snaps[-1].taken_at)
    r = resume_from_trace(daemon, path, snaps[-1].taken_at)
    assert r.snapshots == 100 and "bad snapshot line" in r.warnings[-1]

    # a clock set back: snapshots later than now are not history
    path2 = tmp_path / "t2.jsonl"
    write(path2, snaps)
    now = snaps[150].taken_at
    daemon = replay_daemon(resolved, TraceCollector(), now)
    r = resume_from_trace(daemon, path2, now)
    assert r.snapshots == 151 and r.last_at == now
    assert any("after now" in w for w in r.warnings)


def test_run_resumes_from_its_record_trace_before_the_first_tick(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    """`run --once` with `record:`: the start-up log says what was taken up (Triton is down)."""
    snaps, _ = recorded
    shift = time.time() - 10.0 - snaps[-1].taken_at  # the trace ends 10 s before the start
    moved = [
        dataclasses.replace(
            s,
            taken_at=s.taken_at + shift,
            models_as_of=None if s.models_as_of is None else s.models_as_of + shift,
        )
        for s in snaps
    ]
    trace = tmp_path / "trace.jsonl"
    write(trace, moved)
    models = {f"m{i}": {"profile": "nemo-gpt-1.3b", "slo_p95_ms": 600} for i in range(3)}
    cfg = write_config(tmp_path / "c.yaml", models=models, record=str(trace))
    code, _, err = cli("run", "--once", "--log-format", "json", "-c", str(cfg))
    assert code == 1  # no Triton: every model's telemetry invalid
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    resumed = [x for x in lines if x.get("event") == "resumed_from_trace"]
    assert len(resumed) == 1 and resumed[0]["snapshots"] == len(snaps)
    assert resumed[0]["trace"] == str(trace) and 10.0 <= resumed[0]["last_age_s"] < 60.0
    events = [x.get("event") for x in lines]
    assert events.index("resumed_from_trace") < events.index("starting")


def test_resume_from_an_unreachable_prometheus_starts_cold_and_says_why(
    recorded: tuple[list[Snapshot], Resolved],
) -> None:
    snaps, resolved = recorded
    url = f"http://127.0.0.1:{closed_port()}"
    daemon = replay_daemon(resolved, TraceCollector(), snaps[-1].taken_at)
    r = resume_from_prometheus(
        daemon,
        lambda client: PrometheusModelSource(url, client=client),
        url,
        requests.Session(),
        snaps[-1].taken_at,
    )
    assert r.snapshots == 0 and f"cannot query Prometheus at {url}" in r.why_none
    assert r.warnings == (r.why_none,) and not daemon.state.models


def test_measured_start_ups_not_read_from_prometheus_say_why() -> None:
    """The start-ups' query runs as the sources' queries do, and says why it failed."""
    from autoscaler.resume import _startups_from_prometheus

    snaps, resolved = telemetry(models=1, minutes=1)
    url = f"http://127.0.0.1:{closed_port()}"
    daemon = replay_daemon(resolved, TraceCollector(), snaps[-1].taken_at)
    took, why = _startups_from_prometheus(daemon, url, requests.Session(), snaps[-1].taken_at, 600)
    assert took == 0
    assert why == f"measured start-ups not read: cannot reach Prometheus at {url}"
    assert not daemon.state.models


# -- a trace kept to a size (`record_max_mb`) ----------------------------------------------------


def written_with_rotation(path: Path, snaps: list[Snapshot], lines_a_file: int) -> tuple[int, int]:
    """`snaps` written to a trace that rotates every ~`lines_a_file` lines: (limit, line) bytes."""
    line = len(json.dumps(snapshot_to_json(snaps[0]), separators=(",", ":"))) + 1
    limit = lines_a_file * line
    with TraceWriter(path, max_bytes=limit) as w:
        for s in snaps:
            w.write(s)
    return limit, line


def test_a_trace_past_its_size_is_kept_as_dot_1_and_a_new_one_starts(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    limit, line = written_with_rotation(path, snaps[:95], lines_a_file=10)
    old, new = rotated(path), path
    assert old.name == "t.jsonl.1" and old.exists() and new.exists()
    kept = list(iter_trace(old)) + list(iter_trace(new))  # both start with a header
    taken = [s.taken_at for s in kept]
    assert taken == [s.taken_at for s in snaps[95 - len(kept) : 95]]  # the newest, in order
    assert old.stat().st_size >= limit and new.stat().st_size < limit + line
    assert old.stat().st_size + new.stat().st_size <= 2 * (limit + 2 * line)


def test_a_rotation_that_cannot_move_the_file_goes_on_appending(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved], monkeypatch: pytest.MonkeyPatch
) -> None:
    snaps, _ = recorded
    path = tmp_path / "t.jsonl"
    w = TraceWriter(path, max_bytes=1)

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("autoscaler.telemetry.trace.os.replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        w.write(snaps[0])  # the daemon logs trace_write_failed and goes on
    monkeypatch.undo()
    w.write(snaps[1])  # rotates now: snaps[0..1] go to .1
    w.close()
    assert [s.taken_at for s in iter_trace(rotated(path))] == [snaps[0].taken_at, snaps[1].taken_at]


def test_resume_reads_across_a_rotation(
    tmp_path: Path, recorded: tuple[list[Snapshot], Resolved]
) -> None:
    snaps, resolved = recorded
    path = tmp_path / "t.jsonl"
    written_with_rotation(path, snaps, lines_a_file=100)
    kept = list(iter_trace(rotated(path))) + list(iter_trace(path))
    assert 100 < len(kept) < len(snaps)  # the oldest went with an earlier rotation
    now = snaps[-1].taken_at + 5.0
    daemon = replay_daemon(resolved, TraceCollector(), now)
    r = resume_from_trace(daemon, path, now)
    assert (r.snapshots, r.first_at, r.last_at) == (len(kept), kept[0].taken_at, kept[-1].taken_at)
    reference, _ = ticked(resolved, kept)
    assert daemon.state == reference.state


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"record_max_mb": 100}, "record_max_mb limits the record: trace; set record too"),
        ({"record": "t.jsonl", "record_max_mb": 0}, "greater than 0"),
    ],
)
def test_record_max_mb_needs_a_trace_and_a_size(edit: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"models": {"m0": {"profile": "nemo-gpt-1.3b", "slo_p95_ms": 600}}}
    with pytest.raises(ConfigError, match=message):
        parse_config({**base, **edit})
