"""The actuation stage: turn a scale decision into a change of the model's instances, or not.

Two actuators, chosen by name (`make_actuator`):

- `recommend` changes nothing and says so: the decision is the output.
- `triton` applies the decision through Triton's model-control API: it reads the
  model's live config, rewrites only `instance_group`, loads the model with that
  config (`POST v2/repository/models/NAME/load`), and checks that the model is
  ready with the new count. Only `instance_group` changes, so Triton adds or
  removes instances in place: in-flight requests keep running and the instances
  that stay are not reloaded. A failed change is rolled back by loading the
  previous config again.

`apply()` never raises: every failure, including an unreachable server, becomes
an `ApplyResult` with `ok=False` and the reason, so that one bad model or a
restarting Triton never stops the daemon's loop.

Instance groups are rewritten by the pure `new_instance_groups`. Triton matches
the instances of the old and the new config by their group's settings *other
than* `name` and `count`, plus the device (`EquivalentInInstanceConfig` in
Triton core); so raising or lowering `count` keeps the existing instances, while
changing a group's `gpus` list makes all of that group's instances new ones
(weights reloaded, memory briefly doubled). The helper therefore never edits
the `gpus` of an existing group unless there is no other way to remove an odd
instance (see `_shrink_gpu_groups`).

Seen on Triton 2.51: the *first* load with a config of a model that was loaded
from its files is a full background reload (the old model serves until the new
one is ready), even when the config is identical; later instance-group changes
are in place (adding instances ~0.2 s, removing ~2.3 s with emulated models).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autoscaler.errors import ConfigError
from autoscaler.policy.decision import Action, Decision, PlacementSlot
from autoscaler.transport import NO_SECURITY, Security

if TYPE_CHECKING:
    import tritonclient.http

# A load returns once Triton has created the new instances (or removed the old
# ones, waiting for their in-flight requests); a large model's instances load
# their weights first, which can take minutes on a real GPU.
DEFAULT_TIMEOUT_S = 300.0
# After a load that Triton accepted, how long the new count may take to show.
DEFAULT_VERIFY_TIMEOUT_S = 30.0
# The model-control probe is one tiny request: fail fast when nobody answers.
PROBE_TIMEOUT_S = 10.0
VERIFY_POLL_S = 0.2

# What Triton 2.51 answers (HTTP 503) to any load/unload when it was started
# with --model-control-mode=none or =poll (the same text for both modes).
NOT_EXPLICIT_MARKER = "explicit model load / unload is not allowed"

ENABLE_HINT = (
    "start tritonserver with --model-control-mode=explicit, and --load-model=NAME "
    "for each model to serve at start-up (or --load-model=*), so that the autoscaler "
    "can change instance counts; until then it can only recommend (--mode recommend)"
)


# -- results and the protocol ----------------------------------------------------------------
@dataclass(frozen=True)
class ApplyResult:
    """What happened to one decision.

    `ok` is False only when something went wrong: a decision that needed no
    change (hold, recommend mode, count already right) is `ok=True,
    applied=False`. `new_instances` is the count read back from Triton at the
    end, or `previous_instances` when it could not be read (the error says so).
    `rolled_back` is True when a failed change was undone by loading the previous
    config again and that config was seen serving.
    """

    model: str
    ok: bool
    applied: bool
    previous_instances: int
    new_instances: int
    duration_s: float
    error: str = ""
    rolled_back: bool = False
    message: str = ""  # one line for a person, in every case
    at: float = 0.0  # the `now` given to apply(): the tick this belongs to

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Actuator(Protocol):
    """Applies (or not) one decision; never raises."""

    name: str

    def apply(self, decision: Decision, now: float) -> ApplyResult: ...


def _unchanged(
    decision: Decision, now: float, message: str, duration_s: float = 0.0
) -> ApplyResult:
    return ApplyResult(
        model=decision.model,
        ok=True,
        applied=False,
        previous_instances=decision.current_instances,
        new_instances=decision.current_instances,
        duration_s=duration_s,
        message=message,
        at=now,
    )


class RecommendActuator:
    """`recommend`: applies nothing; the result says what would have been done."""

    name = "recommend"

    def __init__(self, **_options: Any) -> None:
        # Options meant for other actuators (url, timeouts) are accepted and
        # ignored, so that switching between modes changes only the name.
        pass

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        if decision.changes:
            what = (
                f"recommend mode: not applied ({decision.action.value} "
                f"{decision.current_instances} → {decision.desired_instances})"
            )
        else:
            what = f"recommend mode: nothing to apply ({decision.action.value})"
        return _unchanged(decision, now, what)


# -- instance groups (pure) ----------------------------------------------------------------
def _is_gpu(group: Mapping[str, Any]) -> bool:
    # Triton's normalised config never says KIND_AUTO (it resolves it to CPU or
    # GPU); in a hand-written one, AUTO with GPUs listed behaves like KIND_GPU.
    kind = str(group.get("kind", "KIND_AUTO"))
    return kind == "KIND_GPU" or (kind == "KIND_AUTO" and bool(group.get("gpus")))


def _count(group: Mapping[str, Any]) -> int:
    # Triton turns a count below 1 into 1 (as seen: a load with count 0 serves 1).
    return max(1, int(group.get("count", 1)))


def group_instances(group: Mapping[str, Any]) -> int:
    """Instances one group makes: for KIND_GPU, `count` on each listed GPU."""
    if _is_gpu(group):
        gpus = group.get("gpus") or []
        if not gpus:
            raise ValueError(
                "a KIND_GPU instance group without 'gpus' means 'every GPU', which only "
                "Triton knows: use the config as Triton returns it (GET v2/models/NAME/config), "
                "where the GPUs are listed"
            )
        return _count(group) * len(gpus)
    return _count(group)


def instance_total(config: Mapping[str, Any]) -> int:
    """Total instances of a model config (passive groups included, as telemetry counts them)."""
    return sum(group_instances(g) for g in config.get("instance_group") or [])


def _attrs(group: Mapping[str, Any]) -> dict[str, Any]:
    """A group's settings that make up its instances' identity (all but name, count, gpus)."""
    return {k: v for k, v in group.items() if k not in ("name", "count", "gpus")}


def new_instance_groups(
    config: Mapping[str, Any],
    desired_total: int,
    placement: Sequence[PlacementSlot] = (),
) -> list[dict[str, Any]]:
    """The `instance_group` list that gives `config` exactly `desired_total` instances.

    - KIND_CPU / KIND_MODEL: the last active group's `count` grows (scale up), or
      counts shrink from the last group backwards, groups reaching 0 dropped
      (scale down); `placement` is ignored: those instances are not on a GPU.
    - KIND_GPU, scale up: each placement slot adds its instances on its GPU,
      as `count` of a single-GPU group for that GPU (an existing one with the same
      settings, else a new one): one group per GPU, because `count` applies to
      every GPU a group lists. The placement must add exactly the difference.
    - KIND_GPU, scale down: single-GPU groups shrink first, on the GPUs the
      placement names (a release that makes room for another model), then always on
      the GPU with the most instances (ties: the highest index, then the newest group),
      then multi-GPU groups lose whole `count` steps; only an odd remainder splits
      one multi-GPU group (those instances are recreated by Triton).
    - Passive groups (loaded, never scheduled) are kept as they are.

    Raises ValueError when the change cannot be expressed safely.
    """
    groups = [dict(g) for g in config.get("instance_group") or []]
    if not groups:
        raise ValueError(
            "the config has no instance_group; use the config as Triton returns it, "
            "which always lists the groups"
        )
    if desired_total < 1:
        raise ValueError(f"desired instances must be at least 1, got {desired_total}")
    active = [i for i, g in enumerate(groups) if not g.get("passive")]
    if not active:
        raise ValueError("every instance group is passive: nothing serves requests to scale")
    kinds = {_is_gpu(groups[i]) for i in active}
    if len(kinds) > 1:
        raise ValueError(
            "the model mixes KIND_GPU and non-GPU instance groups; which kind to scale "
            "is ambiguous, so it is left to a person"
        )
    current = instance_total({"instance_group": groups})
    delta = desired_total - current
    if delta == 0:
        return groups
    passive = [g for g in groups if g.get("passive")]
    act = [groups[i] for i in active]
    for g in act:
        g["count"] = _count(g)  # spelled out, so the arithmetic below can rely on it
    if kinds == {True}:
        if delta > 0:
            act = _grow_gpu_groups(act, delta, placement)
        else:
            act = _shrink_gpu_groups(act, -delta, placement)
    else:
        act = _grow_count_groups(act, delta) if delta > 0 else _shrink_count_groups(act, -delta)
    out = act + passive
    # The result is checked, not trusted: a wrong count here would be applied.
    assert instance_total({"instance_group": out}) == desired_total, (out, desired_total)
    return out


def _grow_count_groups(groups: list[dict[str, Any]], add: int) -> list[dict[str, Any]]:
    # Only `count` changes: Triton keeps every existing instance of the group.
    last = groups[-1]
    last["count"] = _count(last) + add
    return groups


def _shrink_count_groups(groups: list[dict[str, Any]], remove: int) -> list[dict[str, Any]]:
    for g in reversed(groups):
        take = min(remove, _count(g))
        # A group cannot say 0 (Triton would read it as 1): it goes instead.
        g["count"] = _count(g) - take
        remove -= take
        if remove == 0:
            break
    return [g for g in groups if g["count"] > 0]


def _per_gpu(groups: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    load: dict[int, int] = {}
    for g in groups:
        for gpu in g.get("gpus") or []:
            load[int(gpu)] = load.get(int(gpu), 0) + _count(g)
    return load


def _grow_gpu_groups(
    groups: list[dict[str, Any]], add: int, placement: Sequence[PlacementSlot]
) -> list[dict[str, Any]]:
    placed = sum(s.instances for s in placement)
    if placed != add:
        raise ValueError(
            f"the placement puts {placed} new instance(s) on GPUs but the decision adds {add}: "
            "a KIND_GPU model is only scaled up where the policy found memory"
        )
    if any(s.instances < 0 for s in placement):
        raise ValueError("a placement slot has a negative instance count")
    # New instances copy the settings of the first group (profile, rate limiter, ...).
    template = _attrs(groups[0])
    for slot in placement:
        if slot.instances == 0:
            continue
        same = [
            g
            for g in groups
            if [int(x) for x in g.get("gpus") or []] == [slot.gpu] and _attrs(g) == template
        ]
        if same:
            same[-1]["count"] = _count(same[-1]) + slot.instances
        else:
            groups.append({**copy.deepcopy(template), "count": slot.instances, "gpus": [slot.gpu]})
    return groups


def _shrink_gpu_groups(
    groups: list[dict[str, Any]], remove: int, placement: Sequence[PlacementSlot] = ()
) -> list[dict[str, Any]]:
    # 1. Single-GPU groups (those the autoscaler adds): from the GPUs the decision names
    # (a release that makes room for another model), then from the busiest GPU.
    wanted = {s.gpu: s.instances for s in placement}
    while remove > 0:
        singles = [
            (i, int(g["gpus"][0]))
            for i, g in enumerate(groups)
            if len(g.get("gpus") or []) == 1 and g["count"] > 0
        ]
        if not singles:
            break
        load = _per_gpu(g for g in groups if g["count"] > 0)
        named = [s for s in singles if wanted.get(s[1], 0) > 0]
        i, gpu = max(named or singles, key=lambda s: (load.get(s[1], 0), s[1], s[0]))
        if named:
            wanted[gpu] -= 1
        groups[i]["count"] -= 1
        remove -= 1
    # 2. Multi-GPU groups in whole steps: one `count` less removes one instance on
    # each listed GPU and keeps the others (only `count` changes).
    for g in reversed(groups):
        width = len(g.get("gpus") or [])
        if width < 2:
            continue
        steps = min(remove // width, g["count"])
        g["count"] -= steps
        remove -= steps * width
    # 3. An odd remainder (fewer than the GPUs of any group left): split the last
    # multi-GPU group into `count - 1` on all its GPUs (kept as is) plus one more
    # on all but the `remove` busiest GPUs. The second group is new to Triton, so
    # its instances are created afresh: the only case where instances move.
    if remove > 0:
        wide = [
            i for i, g in enumerate(groups) if len(g.get("gpus") or []) > remove and g["count"] > 0
        ]
        if not wide:  # cannot happen while desired ≥ 1; checked rather than assumed
            raise ValueError(f"cannot remove {remove} more instance(s) from these groups")
        idx = wide[-1]
        g = groups[idx]
        gpus = [int(x) for x in g["gpus"]]
        load = _per_gpu(x for x in groups if x["count"] > 0)
        drop = sorted(gpus, key=lambda d: (load.get(d, 0), d), reverse=True)[:remove]
        keep = [d for d in gpus if d not in drop]
        g["count"] -= 1
        extra = {**copy.deepcopy(_attrs(g)), "count": 1, "gpus": keep}
        groups.insert(idx + 1, extra)
        remove = 0
    kept = [g for g in groups if g["count"] > 0]
    return kept


# -- Triton --------------------------------------------------------------------------------
def _describe(exc: BaseException) -> str:
    """One line for an exception: Triton's own message when it sent one."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status, text = exc.status(), str(exc.message()).strip()
        return f"HTTP {status}: {text}" if status else text
    return f"{type(exc).__name__}: {exc}".strip()


def _answered(exc: BaseException) -> bool:
    """Whether the exception is an error reply from Triton (not a transport failure)."""
    from tritonclient.utils import InferenceServerException

    return isinstance(exc, InferenceServerException)


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError | ConnectionResetError)


class TritonActuator:
    """`triton`: applies scale decisions with Triton's model-control API (explicit mode)."""

    name = "triton"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify_timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S,
        poll_interval_s: float = VERIFY_POLL_S,
        grpc_url: str | None = None,
        security: Security = NO_SECURITY,
    ) -> None:
        from autoscaler.telemetry.triton import http_host_port, url_scheme

        if not timeout_s > 0:
            raise ConfigError("must be positive", field="timeout_s", value=timeout_s)
        if not verify_timeout_s >= 0:
            raise ConfigError("must be ≥ 0", field="verify_timeout_s", value=verify_timeout_s)
        try:
            self.url = http_host_port(url)
        except ValueError as exc:
            raise ConfigError(str(exc), field="triton url", value=url) from None
        # https: verified against the system's CAs or tls.ca_file, with the client
        # certificate if one is set; the credential's header goes with every call.
        self.tls = url_scheme(url) == "https"
        self.security = security
        self._headers = security.plain_headers() or None
        # With a gRPC address, load_model goes over gRPC: Triton 2.51 runs an HTTP
        # load on one of its HTTP worker threads for as long as it waits (minutes
        # under a backlog, docs/reliability.md); in one pair of such stalls 5 of
        # 1,018 client requests hit their 60 s timeout with the load over HTTP, 0
        # of 1,015 with it over gRPC.
        self.grpc_url: str | None = None
        self.grpc_tls = False
        if grpc_url:
            try:
                import tritonclient.grpc  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "needs the gRPC client: pip install 'tritonclient[grpc]'",
                    field="triton grpc_url",
                    value=grpc_url,
                ) from None
            try:
                self.grpc_url = http_host_port(grpc_url, default_port=8001)
            except ValueError as exc:
                raise ConfigError(str(exc), field="triton grpc_url", value=grpc_url) from None
            self.grpc_tls = grpc_url.strip().lower().startswith(("grpcs://", "https://"))
        self.timeout_s = float(timeout_s)
        self.verify_timeout_s = float(verify_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- clients ------------------------------------------------------------------------
    def _client(self, timeout_s: float | None = None) -> tritonclient.http.InferenceServerClient:
        # A client per call: tritonclient.http sits on gevent, whose connections
        # belong to the thread that made them, and applies may come from any thread.
        import tritonclient.http

        t = self.timeout_s if timeout_s is None else timeout_s
        tls: dict[str, Any] = {}
        if self.tls:
            sec, opts = self.security, {}
            if sec.ca_file is not None:
                opts["ca_certs"] = str(sec.ca_file)
            if sec.cert_file is not None:
                opts["certfile"] = str(sec.cert_file)
                opts["keyfile"] = str(sec.key_file or sec.cert_file)
            tls = {"ssl": True, "ssl_options": opts, "insecure": False}
        return tritonclient.http.InferenceServerClient(
            self.url, connection_timeout=min(t, PROBE_TIMEOUT_S), network_timeout=t, **tls
        )

    def _load(
        self, client: tritonclient.http.InferenceServerClient, model: str, config: str
    ) -> None:
        """`load_model(model, config=...)`, over gRPC when an address was given."""
        if self.grpc_url is None:
            client.load_model(model, config=config, headers=self._headers)
            return
        import tritonclient.grpc

        sec = self.security
        tls: dict[str, Any] = {}
        if self.grpc_tls:
            tls = {
                "ssl": True,
                "root_certificates": str(sec.ca_file) if sec.ca_file else None,
                "private_key": str(sec.key_file or sec.cert_file) if sec.cert_file else None,
                "certificate_chain": str(sec.cert_file) if sec.cert_file else None,
            }
        grpc_client = tritonclient.grpc.InferenceServerClient(self.grpc_url, **tls)
        try:
            grpc_client.load_model(
                model, config=config, client_timeout=self.timeout_s, headers=self._headers
            )
        finally:
            with contextlib.suppress(Exception):
                grpc_client.close()

    # -- model control mode -------------------------------------------------------------
    def check_model_control(self) -> tuple[bool, str]:
        """Whether Triton accepts model loads (`--model-control-mode=explicit`), and why not.

        Probes with an unload of a model name that cannot exist: under explicit
        control Triton answers success and does nothing; in `none` or `poll` mode it
        refuses every load and unload with the same 503 error.
        """
        probe = f"__triton_autoscaler_probe_{uuid.uuid4().hex[:12]}__"
        client = None
        try:
            client = self._client(PROBE_TIMEOUT_S)
            client.unload_model(probe, headers=self._headers)
        except Exception as exc:
            text = _describe(exc)
            if NOT_EXPLICIT_MARKER in text:
                return False, (
                    f"Triton at {self.url} does not run with explicit model control "
                    f"(it answered: {text}): {ENABLE_HINT}"
                )
            if isinstance(exc, OSError):
                return False, f"cannot reach Triton at {self.url} ({text})"
            return False, (
                f"Triton at {self.url} gave an unexpected answer to a model-control probe "
                f"({text}); not applying changes to be safe"
            )
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        return True, f"Triton at {self.url} runs with --model-control-mode=explicit"

    # -- apply --------------------------------------------------------------------------
    def _lock_for(self, model: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(model, threading.Lock())

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        """Apply a scale_up / scale_down decision; anything else changes nothing."""
        started = time.monotonic()
        if decision.action not in (Action.scale_up, Action.scale_down):
            return _unchanged(decision, now, f"nothing to apply ({decision.action.value})")
        lock = self._lock_for(decision.model)
        # One change per model at a time: a second one would read a config that is
        # about to change and could undo the first.
        if not lock.acquire(blocking=False):
            return self._failed(decision, now, started, "change in flight for this model")
        try:
            return self._apply_locked(decision, now, started)
        except Exception as exc:  # the promise: apply() never raises
            return self._failed(decision, now, started, f"unexpected error: {_describe(exc)}")
        finally:
            lock.release()

    def _failed(
        self,
        decision: Decision,
        now: float,
        started: float,
        error: str,
        *,
        previous: int | None = None,
        new: int | None = None,
        applied: bool = False,
        rolled_back: bool = False,
    ) -> ApplyResult:
        prev = decision.current_instances if previous is None else previous
        return ApplyResult(
            model=decision.model,
            ok=False,
            applied=applied,
            previous_instances=prev,
            new_instances=prev if new is None else new,
            duration_s=time.monotonic() - started,
            error=error,
            rolled_back=rolled_back,
            message=f"not applied: {error}" if not rolled_back else f"rolled back: {error}",
            at=now,
        )

    def target_config(self, current: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
        """The config to load: `current` with the new instance groups (a hook for subclasses)."""
        cfg = copy.deepcopy(dict(current))
        cfg["instance_group"] = new_instance_groups(
            current, decision.desired_instances, decision.placement
        )
        return cfg

    def _apply_locked(self, decision: Decision, now: float, started: float) -> ApplyResult:
        model, desired = decision.model, decision.desired_instances
        client = self._client()
        try:
            try:
                before = client.get_model_config(model, headers=self._headers)
                previous = instance_total(before)
            except Exception as exc:
                return self._failed(
                    decision,
                    now,
                    started,
                    f"cannot read the config of '{model}' from Triton at {self.url}: "
                    f"{_describe(exc)}",
                )
            if previous == desired:
                return ApplyResult(
                    model=model,
                    ok=True,
                    applied=False,
                    previous_instances=previous,
                    new_instances=previous,
                    duration_s=time.monotonic() - started,
                    message=f"already at {previous} instance(s)",
                    at=now,
                )
            if previous != decision.current_instances:
                # The decision was made for another state (a restart reverted the
                # config, someone else changed it): its placement may not fit now.
                return self._failed(
                    decision,
                    now,
                    started,
                    f"stale decision: Triton serves {previous} instance(s), the decision "
                    f"assumed {decision.current_instances}",
                    previous=previous,
                )
            try:
                target = self.target_config(before, decision)
            except ValueError as exc:
                return self._failed(decision, now, started, str(exc), previous=previous)
            try:
                self._load(client, model, json.dumps(target))
            except Exception as exc:
                text = _describe(exc)
                if NOT_EXPLICIT_MARKER in text:
                    # Refused before anything was touched: nothing to roll back.
                    return self._failed(
                        decision,
                        now,
                        started,
                        f"Triton does not run with explicit model control ({text}): {ENABLE_HINT}",
                        previous=previous,
                    )
                # An answer from Triton is a refusal; anything else (a dropped
                # connection, a timeout) leaves the outcome unknown.
                what = "Triton refused the new config" if _answered(exc) else "the load failed"
                why = f"{what}: {text}"
                return self._roll_back(client, decision, now, started, before, previous, why)
            ok, why = self._wait_for(client, model, desired)
            if not ok:
                why = f"the new config did not take: {why}"
                return self._roll_back(client, decision, now, started, before, previous, why)
            return ApplyResult(
                model=model,
                ok=True,
                applied=True,
                previous_instances=previous,
                new_instances=desired,
                duration_s=time.monotonic() - started,
                message=f"{previous} → {desired} instance(s)",
                at=now,
            )
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def _wait_for(
        self, client: tritonclient.http.InferenceServerClient, model: str, want: int
    ) -> tuple[bool, str]:
        """Poll until the model is ready with `want` instances (read back from its config)."""
        deadline = time.monotonic() + self.verify_timeout_s
        while True:
            try:
                ready = bool(client.is_model_ready(model, headers=self._headers))
                total = (
                    instance_total(client.get_model_config(model, headers=self._headers))
                    if ready
                    else None
                )
                if ready and total == want:
                    return True, ""
                last = f"ready={ready}, {total} instance(s), want {want}"
            except Exception as exc:
                last = _describe(exc)
                if _unreachable(exc):  # the server is gone: waiting will not help
                    return False, f"Triton at {self.url} went away ({last})"
            if time.monotonic() >= deadline:
                return False, f"after {self.verify_timeout_s:g} s: {last}"
            time.sleep(self.poll_interval_s)

    def _roll_back(
        self,
        client: tritonclient.http.InferenceServerClient,
        decision: Decision,
        now: float,
        started: float,
        before: Mapping[str, Any],
        previous: int,
        error: str,
    ) -> ApplyResult:
        # Triton keeps the old model serving when a load fails, but a timeout or a
        # dropped connection leaves the outcome unknown: loading the previous
        # config again makes it certain (and is a no-op when nothing changed).
        try:
            self._load(client, decision.model, json.dumps(before))
        except Exception as exc:
            now_total = self._read_total(client, decision.model)
            state = (
                f"it serves {now_total} instance(s)"
                if now_total is not None
                else "its instance count is unknown"
            )
            if not _answered(exc) and not _unreachable(exc):
                # Triton loads one model's configs one after another: a restore sent
                # while the timed-out change still runs waits for it, then runs. Seen
                # here (an instance that takes 6 s to start, a 2 s timeout): the count
                # went 1 → 2 when the change finished and back to 1 a second later.
                state = (
                    f"Triton runs the restore after the change it is still applying, so "
                    f"expect {previous} instance(s) once both finish ({state} now)"
                )
            return self._failed(
                decision,
                now,
                started,
                f"{error}; restoring the previous config failed too ({_describe(exc)}); {state}",
                previous=previous,
                new=now_total,
            )
        ok, why = self._wait_for(client, decision.model, previous)
        if not ok:
            return self._failed(
                decision,
                now,
                started,
                f"{error}; the previous config was loaded again but did not read back: {why}",
                previous=previous,
                new=self._read_total(client, decision.model),
            )
        return self._failed(
            decision, now, started, error, previous=previous, new=previous, rolled_back=True
        )

    def _read_total(
        self, client: tritonclient.http.InferenceServerClient, model: str
    ) -> int | None:
        try:
            return instance_total(client.get_model_config(model, headers=self._headers))
        except Exception:
            return None


# -- registry ------------------------------------------------------------------------------
ActuatorFactory = Callable[..., Actuator]

_REGISTRY: dict[str, ActuatorFactory] = {
    "recommend": RecommendActuator,
    "triton": TritonActuator,
}


def register_actuator(name: str, factory: ActuatorFactory) -> None:
    """Make `factory(**options)` available as `make_actuator(name, ...)`."""
    _REGISTRY[name] = factory


def known_actuators() -> list[str]:
    return sorted(_REGISTRY)


def make_actuator(name: str, *, field: str = "actuator", **options: Any) -> Actuator:
    """The actuator called `name`, built with `options` (e.g. url= for `triton`)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError("unknown actuator", field=field, value=name, allowed=known_actuators())
    try:
        return factory(**options)
    except TypeError as exc:
        # A missing or unknown option (no url for `triton`): the user's input.
        raise ConfigError(f"actuator '{name}': {exc}", field=field) from None
