"""Which other server has room for instances this one cannot place.

`room_for` is the lookup, a pure function of a `FleetView`: for each live
server but this one, the same best-fit packing the policy uses
(`placement.pack`, headroom kept) on that server's GPUs as its daemon last
read them. Servers that already serve the model come first (its repository
has it, the load balancer already sends it traffic), then servers whose own
daemon is not asking for more instances, then the most instances placed.

`RoomAdvisor` attaches the answer to capacity_exhausted decisions (reason and
`details["room_elsewhere"]`), so the log, Slack and webhooks name a server
with room instead of only "capacity exhausted". It reads the fleet lazily: only
when a decision is capacity_exhausted, at most every `refresh_s`, bounded by
`timeout_s`. `with_room` wraps a policy function with it, which is how the
daemon uses it today without a change to the policy (see docs/fleet.md for how
the policy can take a `RoomLookup` as a typed input instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from autoscaler.fleet.view import (
    ROOM_PARTS,
    STALE_AFTER_S,
    FleetReader,
    FleetUnavailable,
    FleetView,
)
from autoscaler.kubernetes.settings import UNLIMITED_STEP
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.capacity import CEIL_SLACK
from autoscaler.policy.decision import Action, Decision
from autoscaler.policy.state import PolicyContext

DETAILS_KEY = "room_elsewhere"


@dataclass(frozen=True)
class Slot:
    gpu: int
    instances: int
    free_gb_before: float


@dataclass(frozen=True)
class ServerRoom:
    server: str
    fits: int  # of the instances asked for
    slots: tuple[Slot, ...]
    serves_model: bool
    growing: bool  # its own daemon wants more instances of some model now
    free_gb: float  # after headroom, over its GPUs, before placing

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "fits": self.fits,
            "serves_model": self.serves_model,
            "growing": self.growing,
            "free_gb": round(self.free_gb, 2),
            "gpus": [
                {"gpu": s.gpu, "instances": s.instances, "free_gb_before": s.free_gb_before}
                for s in self.slots
            ],
        }


@dataclass(frozen=True)
class RoomAnswer:
    model: str
    instances: int  # looked for
    memory_gb: float  # per instance
    servers: tuple[ServerRoom, ...]  # best first; empty: no other server has room
    looked_at: int  # live servers looked at (this one left out)
    read_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "instances": self.instances,
            "memory_per_instance_gb": self.memory_gb,
            "servers": [s.to_json() for s in self.servers],
            "servers_looked_at": self.looked_at,
            "fleet_read_at": self.read_at,
        }

    def sentence(self, limit: int = 2) -> str:
        what = f"{self.model} ({self.memory_gb:g} GB each)"
        if not self.servers:
            return (
                f"no other server has room for one more {what} either "
                f"({self.looked_at} live server{'s' if self.looked_at != 1 else ''} looked at)"
            )
        parts = []
        for s in self.servers[:limit]:
            gpus = ", ".join(f"gpu{x.gpu} +{x.instances}" for x in s.slots)
            note = "" if s.serves_model else f", does not serve {self.model} yet"
            parts.append(f"{s.server} fits {s.fits} of {self.instances} ({gpus}{note})")
        more = len(self.servers) - limit
        tail = f"; {more} more server{'s' if more != 1 else ''} with room" if more > 0 else ""
        return "room elsewhere: " + "; ".join(parts) + tail


class RoomLookup(Protocol):
    """What a policy needs to name a server with room (a typed input it can take):
    servers with room for `instances` of `model` at `now`, or None without fleet data.
    `RoomAdvisor.lookup` is one."""

    def __call__(
        self, model: str, memory_gb: float, instances: int, now: float
    ) -> RoomAnswer | None: ...


def room_for(
    view: FleetView,
    model: str,
    memory_gb: float,
    instances: int,
    *,
    headroom_gb: float,
    exclude: str | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> RoomAnswer:
    """Servers (live, not `exclude`) with room for up to `instances` of `model`, best first."""
    found: list[ServerRoom] = []
    looked = 0
    for server in view.live(stale_after_s):
        if server.name == exclude:
            continue
        looked += 1
        bins = [
            GpuBin(g.index, g.total_gb, used_gb=g.total_gb - g.free_gb, uuid=g.uuid)
            for g in server.gpus
            if g.free_gb is not None  # unknown free memory: no room assumed
        ]
        free = sum(max(0.0, b.free_gb(headroom_gb)) for b in bins)
        res = pack(
            [Item(model, memory_gb)] * instances, bins, headroom_gb=headroom_gb, fit=Fit.best
        )
        if not res.placed:
            continue
        by_gpu: dict[int, int] = {}
        for _item, idx in res.placed:
            by_gpu[idx] = by_gpu.get(idx, 0) + 1
        before = {b.index: b.free_gb(headroom_gb) for b in bins}
        found.append(
            ServerRoom(
                server=server.name,
                fits=len(res.placed),
                slots=tuple(Slot(i, n, round(before[i], 2)) for i, n in sorted(by_gpu.items())),
                serves_model=server.model(model) is not None,
                growing=any(m.growing for m in server.models),
                free_gb=free,
            )
        )
    found.sort(key=lambda s: (not s.serves_model, s.growing, -s.fits, -s.free_gb, s.server))
    return RoomAnswer(model, instances, memory_gb, tuple(found), looked, view.at)


def missing_instances(d: Decision) -> int:
    """Instances the demand wants beyond the current count, by the concurrency rule.

    A capacity_exhausted decision keeps desired = current; the count wanted is
    ceil(observed / target − slack) as the policy's concurrency rule reads it (16
    in flight on 1 instance of a 5B, target 4: 3 more). At least one: "the next
    instance" is what a full server is asked about.
    """
    if d.observed_concurrency is None or d.target_concurrency <= 0:
        return 1
    want = max(0, math.ceil(d.observed_concurrency / d.target_concurrency - CEIL_SLACK))
    return max(1, want - d.current_instances)


class RoomAdvisor:
    """Names servers with room on capacity_exhausted decisions (see the module docstring)."""

    def __init__(
        self,
        reader: FleetReader,
        *,
        memory_gb: Mapping[str, float],
        headroom_gb: float,
        server: str | None = None,
        refresh_s: float = 30.0,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.reader = reader
        self.memory_gb = dict(memory_gb)
        self.headroom_gb = headroom_gb
        self.server = server
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        self.view: FleetView | None = None
        self.error = ""
        self._tried_at: float | None = None

    def _fleet(self, now: float) -> FleetView | None:
        due = self._tried_at is None or now - self._tried_at >= self.refresh_s
        if due:
            self._tried_at = now
            try:
                self.view = self.reader.read(now, parts=ROOM_PARTS)
                self.error = ""
            except FleetUnavailable as exc:
                self.error = str(exc)
        if self.view is not None and now - self.view.at > max(2 * self.refresh_s, 60.0):
            self.view = None  # too old to name a server on
        return self.view

    def lookup(self, model: str, memory_gb: float, instances: int, now: float) -> RoomAnswer | None:
        """Servers with room for `instances` of `model` (a `RoomLookup`); None without data."""
        view = self._fleet(now)
        if view is None:
            return None
        return room_for(
            view,
            model,
            memory_gb,
            instances,
            headroom_gb=self.headroom_gb,
            exclude=self.server,
            stale_after_s=self.stale_after_s,
        )

    def advise(
        self,
        decisions: Sequence[Decision],
        now: float,
        missing: Mapping[str, int] | None = None,
    ) -> list[Decision]:
        """`decisions` with servers with room named on the capacity_exhausted ones.

        `missing`: instances the policy wants beyond the current count, per model;
        `missing_instances` estimates it where not given.
        """
        if not any(
            d.action is Action.capacity_exhausted and d.model in self.memory_gb for d in decisions
        ):
            return list(decisions)
        out = []
        for d in decisions:
            if d.action is not Action.capacity_exhausted or d.model not in self.memory_gb:
                out.append(d)
                continue
            wanted = (missing or {}).get(d.model) or missing_instances(d)
            answer = self.lookup(d.model, self.memory_gb[d.model], wanted, now)
            if answer is None:
                why = self.error or "not read yet"
                out.append(replace(d, reason=f"{d.reason}; fleet data unavailable: {why}"))
                continue
            out.append(
                replace(
                    d,
                    reason=f"{d.reason}; {answer.sentence()}",
                    details={**d.details, DETAILS_KEY: answer.to_json()},
                )
            )
        return out


PolicyFn = Callable[[PolicyContext, Any], tuple[list[Decision], Any]]


def with_room(policy_fn: PolicyFn, advisor: RoomAdvisor) -> PolicyFn:
    """`policy_fn` whose capacity_exhausted decisions name servers with room.

    How many instances to find room for is the policy's own answer: for the models
    it found no room for, the same (pure) policy runs again on the same context and
    state with the GPU memory check and the step limit off, and its scale-up says
    how many instances it wanted (the burst rule's 8 for 32 in flight, say, where
    the stable window alone would read fewer). The new state of that run is dropped.
    """

    def decide_with_room(ctx: PolicyContext, state: Any) -> tuple[list[Decision], Any]:
        decisions, new_state = policy_fn(ctx, state)
        full = [d for d in decisions if d.action is Action.capacity_exhausted]
        missing: dict[str, int] = {}
        if full:
            unbounded = replace(
                ctx,
                targets={d.model: ctx.targets[d.model] for d in full if d.model in ctx.targets},
                check_gpu_memory=False,
                policy=ctx.policy.model_copy(update={"max_scale_up_step": UNLIMITED_STEP}),
            )
            again, _ = policy_fn(unbounded, state)
            missing = {
                d.model: d.desired_instances - d.current_instances
                for d in again
                if d.action is Action.scale_up
            }
        return advisor.advise(decisions, ctx.now, missing), new_state

    return decide_with_room
