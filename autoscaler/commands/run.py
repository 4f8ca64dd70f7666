"""`triton-autoscaler run`: the long-running daemon (or one decision with `--once`)."""

from __future__ import annotations

import contextlib
import difflib
import errno
import gc
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import typer

from autoscaler import logs
from autoscaler.applier import BackgroundApplier, InlineApplier
from autoscaler.commands._common import (
    CaFileOption,
    ClientCertOption,
    ClientKeyOption,
    PrometheusTokenFileOption,
    TritonTokenFileOption,
    apply_security_flags,
    check_endpoint_option,
    parse_pairs,
    positive_float,
)
from autoscaler.config import (
    DaemonConfig,
    Endpoints,
    Resolved,
    load_config,
    load_endpoints,
    parse_config,
    resolve,
)
from autoscaler.daemon import (
    Autoscaler,
    Notifier,
    PolicyFn,
    StartupMeter,
    TickReport,
    run_forever,
)
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.errors import EXIT_CHANGES, EXIT_FAILURE, ConfigError, RuntimeFailure
from autoscaler.notify import DEFAULT_CONFIG_PATH, close_all
from autoscaler.notify import build as build_notifiers
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision, Rule
from autoscaler.resume import Resumed, resume_from_prometheus, resume_from_trace
from autoscaler.telemetry.base import Collector, Combined, SourceOptions, gpu_source, model_source
from autoscaler.telemetry.promql import check_selector
from autoscaler.telemetry.snapshot import Snapshot

GB = 1_000_000_000


def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    triton: Annotated[str | None, typer.Option(help="Triton HTTP endpoint, host:port.")] = None,
    metrics_url: Annotated[str | None, typer.Option(help="Triton /metrics URL.")] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=CONCURRENCY optimal concurrency per instance; repeatable."),
    ] = None,
    slo_ms: Annotated[list[str] | None, typer.Option(help="MODEL=MS p95 SLO; repeatable.")] = None,
    memory_gb: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL=GB GPU memory per instance (needed without a profile); repeatable."
        ),
    ] = None,
    profile: Annotated[
        list[str] | None, typer.Option(help="MODEL=PROFILE model profile name; repeatable.")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Model telemetry: triton (default) or prometheus.")
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="GPU telemetry: nvml, prometheus, simulated or none.")
    ] = None,
    prometheus: Annotated[str | None, typer.Option(help="Prometheus base URL.")] = None,
    prometheus_selector: Annotated[
        str | None,
        typer.Option(
            help='Label matchers picking one Triton in Prometheus, e.g. instance="10.0.0.5:8002".'
        ),
    ] = None,
    mode: Annotated[str | None, typer.Option(help="recommend (default) or apply.")] = None,
    once: Annotated[
        bool,
        typer.Option(
            help="Decide once, print JSON lines, exit (1: telemetry never valid or an apply "
            "failed)."
        ),
    ] = False,
    diff: Annotated[
        bool,
        typer.Option(
            help="With --once: apply nothing; print the instance_group change each model "
            "would get and exit 3 when there is one."
        ),
    ] = False,
    record: Annotated[Path | None, typer.Option(help="Append the telemetry trace here.")] = None,
    listen: Annotated[
        str | None, typer.Option(help="host:port for /metrics, /healthz and /status.")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between ticks (> 0; policy tick_interval_s).")
    ] = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
    triton_token_file: TritonTokenFileOption = None,
    prometheus_token_file: PrometheusTokenFileOption = None,
    policies: Annotated[list[Path] | None, typer.Option(help="Extra policies directory.")] = None,
    log_format: Annotated[str, typer.Option(help="auto, json or console.")] = "auto",
) -> None:
    """Watch Triton and GPUs, and recommend or apply instance counts per model."""
    _check_run_options(log_format, once=once, diff=diff)
    logs.configure(log_format)  # type: ignore[arg-type]
    log = logs.get()
    source = str(config) if config else "<command line>"

    def build() -> tuple[Resolved, Endpoints]:
        if config is not None:
            cfg = load_config(config)
            data = cfg.model_dump(mode="python", exclude_unset=True)
        else:
            data = {}
        data = _apply_flags(
            data,
            triton=triton,
            metrics_url=metrics_url,
            target=target,
            slo_ms=slo_ms,
            memory_gb=memory_gb,
            profile=profile,
            models=models,
            gpus=gpus,
            prometheus=prometheus,
            prometheus_selector=prometheus_selector,
            mode=mode,
            record=record,
            listen=listen,
            policies=policies,
            interval=interval,
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=client_key,
            triton_token_file=triton_token_file,
            prometheus_token_file=prometheus_token_file,
        )
        if diff:  # a plan: nothing is applied
            data["mode"] = "recommend"
        cfg = parse_config(data, source)
        return resolve(cfg, source), load_endpoints(cfg, source)

    resolved, endpoints = build()
    cfg = resolved.config
    metrics = DaemonMetrics()

    def make_notifiers(c: DaemonConfig) -> list[Notifier]:
        return decision_sinks(c, metrics) + list(  # list(): list[Notifier] is invariant
            build_notifiers(
                c.notifiers,
                log=log,
                registry=metrics.registry,
                host=socket.gethostname(),
                triton_url=c.triton.url,
                config_path=str(config) if config else DEFAULT_CONFIG_PATH,
                source=source,
            )
        )

    daemon = live_daemon(
        resolved,
        log,
        metrics=metrics,
        recorder=make_recorder(cfg.record, source, cfg.record_max_mb),
        notifiers=[] if once else make_notifiers(cfg),  # --once sends nothing
        background_apply=not once,
        endpoints=endpoints,
    )
    resolved = daemon.resolved
    _resume(daemon, cfg, endpoints, log)
    log.info(
        "starting",
        mode=daemon.mode,
        models=sorted(resolved.targets),
        triton=cfg.triton.url,
        gpus=cfg.telemetry.gpus,
        policy=resolved.policy.name,
    )
    if once:
        _run_once(daemon, cfg, endpoints, diff=diff)
        return

    srv = _serve_http(cfg, metrics, daemon, log)

    def reload() -> None:
        try:
            new, new_endpoints = build()
            new_notifiers = make_notifiers(new.config)  # re-reads rotated secrets
        except Exception as exc:  # an invalid new config never replaces the running one
            log.error("reload_refused", error=str(exc))
            return
        c = new.config
        new_collector = make_collector(c, new, lambda: daemon.instances, new_endpoints)
        new_actuator = make_actuator(c, log, new_endpoints)
        daemon.reload(new, new_collector, new_actuator)
        daemon.policy_fn = policy_for(new)
        old, daemon.notifiers = daemon.notifiers, new_notifiers
        close_all(old, timeout_s=2.0)
        log.info("reloaded", mode=c.mode, models=sorted(new.targets))

    tune_gc()
    notify = _sd_notifier()
    try:
        run_forever(
            daemon,
            interval_s=resolved.policy.tick_interval_s,
            reload=reload,
            on_ready=lambda: notify("READY=1"),
            on_tick=lambda: notify("WATCHDOG=1"),
            on_stopping=lambda: notify("STOPPING=1"),
        )
    finally:
        close_all(daemon.notifiers, timeout_s=3.0)
        srv.shutdown()


def _check_run_options(log_format: str, *, once: bool, diff: bool) -> None:
    """The options checked before anything is read: a bad one is a usage error."""
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(
            "unknown log format",
            field="--log-format",
            value=log_format,
            allowed="auto, json, console",
        )
    if diff and not once:
        raise ConfigError("needs --once (a plan of one decision)", field="--diff")


def _resume(daemon: Autoscaler, cfg: DaemonConfig, endpoints: Endpoints, log: Any) -> None:
    """Warm the policy's memory of the traffic up from the past, where there is one to read."""
    if cfg.record is not None:
        # the policy's memory of the traffic, from the daemon's own trace (autoscaler/resume.py)
        # `decide` itself, without the fleet's room advisor (`policy_for`): what the
        # advisor adds is a reason, not state, and a warm-up would read the fleet for
        # every capacity alarm of the trace
        resumed = resume_from_trace(daemon, cfg.record, time.time(), policy_fn=decide)
        _log_resumed(log, "resumed_from_trace", resumed, trace=str(cfg.record))
    elif cfg.kubernetes is not None:
        # Kubernetes mode reads every pod's series from Prometheus, which holds their past
        resumed = resume_from_pods(daemon, endpoints.prometheus.session(), time.time())
        url = cfg.telemetry.prometheus_url
        _log_resumed(log, "resumed_from_prometheus", resumed, prometheus=url)


def _run_once(daemon: Autoscaler, cfg: DaemonConfig, endpoints: Endpoints, *, diff: bool) -> None:
    """`run --once`: one decision printed (as JSON lines, or as a diff with --diff).

    Raises typer.Exit with 1 when telemetry was never valid or an apply failed (that
    wins over --diff's 3), else with --diff's code when it is not 0.
    """
    report = decide_once(daemon, daemon.resolved.policy.panic_window_s)
    if diff:
        code = print_diff(report.decisions, cfg, endpoints)
    else:
        for d in report.decisions:
            typer.echo(json.dumps(d.to_json()))
        code = 0
    failed = once_failures(report)
    if failed:
        for line in failed:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_FAILURE)
    if code:
        raise typer.Exit(code)


def _serve_http(
    cfg: DaemonConfig, metrics: DaemonMetrics, daemon: Autoscaler, log: Any
) -> ThreadingHTTPServer:
    """Start /metrics, /healthz and /status on http.listen; the server, to shut down at exit."""
    try:
        srv, _ = serve(cfg.http.listen, metrics, daemon.health, daemon.status)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot listen on {cfg.http.listen} (http.listen / --listen): "
            f"{exc.strerror or exc}"
            + (" — another triton-autoscaler running?" if exc.errno == errno.EADDRINUSE else "")
        ) from None
    log.info(
        "http",
        listen=f"{srv.server_address[0]!s}:{srv.server_address[1]}",
        paths=["/metrics", "/healthz", "/status"],
    )
    return srv


def tune_gc() -> None:
    """Fewer garbage collections for a daemon that allocates much per tick, once built.

    A tick at 500 models makes and drops hundreds of thousands of objects (the
    parsed page, samples, decisions, log records): with Python's default
    thresholds (700, 10, 10) the collector ran ~15 young collections and a full
    one every ~10 ticks, ~7 ms of CPU a tick on average (`python -m bench tick`,
    3.5 ms median). Almost all of those objects are freed by reference counting,
    so a young collection every 10,000 net allocations instead of 700 finds the
    same garbage far less often: ~1.5 ms a tick on average, no full collection
    in 60 ticks, +1.5 MB RSS. `freeze` first moves what startup made (modules,
    config, the policy) out of every later collection's way.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def decide_once(daemon: Autoscaler, window_s: float) -> TickReport:
    """Sample once a second over the short window; the last tick's report, with every
    apply made on the way (an inline applier: they have all ended)."""
    start = time.time()
    report = daemon.tick(start)
    applied = list(report.applied)
    while time.time() - start < window_s:
        time.sleep(1.0)
        report = daemon.tick(time.time())
        applied.extend(report.applied)
    report.applied[:] = applied
    return report


def once_failures(report: TickReport) -> list[str]:
    """Why `run --once` must not exit 0: models without valid telemetry, failed applies."""
    out = [
        f"{d.model}: no valid telemetry: {d.reason}"
        for d in report.decisions
        if d.rule is Rule.invalid_telemetry
    ]
    for d, res in report.applied:
        if not res.ok:
            out.append(f"{d.model}: apply failed: {res.error or 'unknown error'}")
    return out


def print_diff(decisions: list[Decision], cfg: DaemonConfig, endpoints: Endpoints) -> int:
    """`run --once --diff`: per model that would change, its instance_group now and after.

    The groups are what the apply would load (`new_instance_groups` on the config
    Triton serves now), as a unified diff. Returns 3 (EXIT_CHANGES) when a change is
    wanted, else 0; an unreadable config is an error (exit 1).
    """
    from autoscaler.actuation import new_instance_groups
    from autoscaler.telemetry.triton import TelemetryReadError, TritonConfigReader

    changes = [d for d in decisions if d.changes]
    if not changes:
        typer.echo("no change wanted", err=True)
        return 0
    reader = TritonConfigReader(
        cfg.triton.url, timeout_s=max(cfg.triton.timeout_s, 5.0), security=endpoints.triton
    )
    try:
        for d in changes:
            try:
                current = reader.config(d.model)
                after = new_instance_groups(current, d.desired_instances, d.placement)
            except (TelemetryReadError, ValueError) as exc:
                raise RuntimeFailure(f"{d.model}: cannot show the change: {exc}") from None
            before_text = json.dumps(current.get("instance_group", []), indent=2).splitlines()
            after_text = json.dumps(after, indent=2).splitlines()
            head = (
                f"{d.model}: {d.action.value} {d.current_instances} → {d.desired_instances} "
                f"({d.rule.value}: {d.reason})"
            )
            typer.echo(f"# {head}")
            for line in difflib.unified_diff(
                before_text,
                after_text,
                fromfile=f"{d.model}/config instance_group (now)",
                tofile=f"{d.model}/config instance_group (wanted)",
                lineterm="",
            ):
                typer.echo(line)
    finally:
        reader.close()
    print(f"{len(changes)} model(s) would change", file=sys.stderr)
    return EXIT_CHANGES


def _apply_flags(data: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """Quick-start flags override (or, without --config, make up) the config."""
    d = dict(data)
    _apply_endpoint_flags(d, flags)
    if flags["prometheus_selector"] is not None:
        _apply_selector_flag(d, flags["prometheus_selector"])
    _apply_daemon_flags(d, flags)
    apply_security_flags(d, flags)
    _apply_model_flags(d, flags)
    return d


def _apply_endpoint_flags(d: dict[str, Any], flags: dict[str, Any]) -> None:
    """--triton / --metrics-url / --models / --gpus / --prometheus: where telemetry comes from.

    An endpoint given is checked as `observe` checks it (an empty --triton fell back to
    the config's address without a word)."""
    if flags["triton"] is not None:
        check_endpoint_option("--triton", flags["triton"])
        d.setdefault("triton", {})["url"] = flags["triton"]
    if flags["metrics_url"] is not None:
        check_endpoint_option("--metrics-url", flags["metrics_url"], scheme_required=True)
        d.setdefault("triton", {})["metrics_url"] = flags["metrics_url"]
    if flags["models"]:
        d.setdefault("telemetry", {})["models"] = flags["models"]
    if flags["gpus"]:
        d.setdefault("telemetry", {})["gpus"] = flags["gpus"]
    if flags["prometheus"]:
        d.setdefault("telemetry", {})["prometheus_url"] = flags["prometheus"]


def _apply_selector_flag(d: dict[str, Any], selector: str) -> None:
    """--prometheus-selector, checked, and only with the prometheus model source.

    Applied after the endpoint flags, so a `--models prometheus` given with it counts.
    """
    try:
        sel = check_selector(selector)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--prometheus-selector", value=selector) from None
    tel = d.setdefault("telemetry", {})
    if tel.get("models", "triton") != "prometheus":
        raise ConfigError(
            "picks Triton's series in Prometheus: it needs the prometheus model source "
            "(--models prometheus, or telemetry.models: prometheus in the config)",
            field="--prometheus-selector",
        )
    tel["prometheus"] = {**tel.get("prometheus", {}), "selector": sel}


def _apply_daemon_flags(d: dict[str, Any], flags: dict[str, Any]) -> None:
    """--mode / --record / --listen / --policies / --interval: how the daemon itself runs."""
    if flags["mode"]:
        d["mode"] = flags["mode"]
    if flags["record"]:
        d["record"] = flags["record"]
    if flags["listen"]:
        d.setdefault("http", {})["listen"] = flags["listen"]
    if flags["policies"]:
        d["policies_dirs"] = [*d.get("policies_dirs", []), *flags["policies"]]
    if flags["interval"] is not None:  # 0 used to be ignored silently
        iv = flags["interval"]
        if not (iv > 0 and math.isfinite(iv)):
            raise ConfigError("must be a positive number of seconds", field="--interval", value=iv)
        d.setdefault("policy_overrides", {})["tick_interval_s"] = iv


def _apply_model_flags(d: dict[str, Any], flags: dict[str, Any]) -> None:
    """--target / --slo-ms / --memory-gb / --profile: per-model settings, MODEL=VALUE each.

    All four are parsed before any is applied, so a bad pair is reported whatever
    the others hold; a model named by any of them gets a `models` entry.
    """
    targets = parse_pairs(
        flags["target"] or [], "--target", positive_float, "CONCURRENCY", "a positive number"
    )
    slos = parse_pairs(flags["slo_ms"] or [], "--slo-ms", positive_float, "MS", "a positive number")
    memory = parse_pairs(
        flags["memory_gb"] or [], "--memory-gb", positive_float, "GB", "a positive number"
    )
    profiles = parse_pairs(flags["profile"] or [], "--profile", str, "PROFILE", "a name")
    models: dict[str, Any] = {k: dict(v) for k, v in d.get("models", {}).items()}
    for name in [*targets, *slos, *memory, *profiles]:
        models.setdefault(name, {})
    for name, v in targets.items():
        models[name]["optimal_concurrency"] = v
    for name, v in slos.items():
        models[name]["slo_p95_ms"] = v
    for name, v in memory.items():
        models[name]["memory_per_instance_gb"] = v
    for name, prof in profiles.items():
        models[name]["profile"] = prof
    if models:
        d["models"] = models


def live_daemon(
    resolved: Resolved,
    log: Any,
    *,
    metrics: DaemonMetrics | None = None,
    recorder: Callable[[Snapshot], None] | None = None,
    notifiers: list[Notifier] | None = None,
    background_apply: bool = True,
    endpoints: Endpoints | None = None,
) -> Autoscaler:
    """The daemon as `run` builds it (also for the demo, benchmarks and tests).

    Sources and actuator come from the config; in apply mode without explicit model
    control the actuator is None and the daemon runs in recommend mode. Changes are
    applied on worker threads (`background_apply`) so ticks go on during a slow
    load_model; `run --once` applies inline, as it exits right after.
    """
    cfg = resolved.config
    holder: dict[str, Autoscaler] = {}
    # simulated GPUs follow the instance counts the daemon last saw
    endpoints = endpoints or load_endpoints(cfg)
    collector = make_collector(
        cfg, resolved, lambda: holder["d"].instances if holder else {}, endpoints
    )
    actuator = make_actuator(cfg, log, endpoints)
    if actuator is None and cfg.mode == "apply":
        resolved = resolved.model_copy(
            update={"config": cfg.model_copy(update={"mode": "recommend"})}
        )
    daemon = Autoscaler(
        resolved,
        collector,
        policy_fn=policy_for(resolved),
        actuator=actuator,
        metrics=metrics or DaemonMetrics(),
        log=log,
        recorder=recorder,
        notifiers=notifiers,
        applier_factory=BackgroundApplier if background_apply else InlineApplier,
        startup_meter=pod_startups(cfg),
    )
    holder["d"] = daemon
    return daemon


def policy_for(resolved: Resolved) -> PolicyFn:
    """The policy, and with a `fleet` section, servers with room named on capacity alarms."""
    f = resolved.config.fleet
    if f is None:
        return decide
    from autoscaler.fleet.room import RoomAdvisor, with_room
    from autoscaler.fleet.view import FleetReader

    url = f.prometheus_url or resolved.config.telemetry.prometheus_url
    assert url is not None  # the config's checks require one
    reader = FleetReader(
        url, selector=f.selector, server_label=f.server_label, timeout_s=f.timeout_s
    )
    advisor = RoomAdvisor(
        reader,
        memory_gb={n: t.memory_per_instance_gb for n, t in resolved.targets.items()},
        headroom_gb=resolved.policy.gpu_headroom_gb,
        server=f.server,
        refresh_s=f.refresh_s,
        stale_after_s=f.stale_after_s,
    )
    return with_room(decide, advisor)


def pod_startups(cfg: DaemonConfig) -> StartupMeter | None:
    """Kubernetes mode times its pods from ask to serving: the policy's start-up horizon."""
    if cfg.kubernetes is None:
        return None
    from autoscaler.kubernetes.startups import PodStartups

    return PodStartups.from_settings(cfg.kubernetes)


def decision_sinks(cfg: DaemonConfig, metrics: DaemonMetrics) -> list[Notifier]:
    """What else reads every tick's decisions: Kubernetes mode's replica gauges."""
    if cfg.kubernetes is None:
        return []
    from autoscaler.kubernetes.replicas import ReplicaExporter

    return [ReplicaExporter.from_settings(metrics, cfg.kubernetes)]


def make_collector(
    cfg: DaemonConfig,
    resolved: Resolved,
    instances: Callable[[], dict[str, int]],
    endpoints: Endpoints | None = None,
) -> Collector:
    t = cfg.telemetry
    endpoints = endpoints or load_endpoints(cfg)
    opts = SourceOptions(
        triton_url=cfg.triton.url,
        metrics_url=cfg.triton.metrics_url,
        prometheus_url=t.prometheus_url,
        hostname=t.hostname,
        prometheus_selector=t.prometheus.selector,
        prometheus_triton=t.prometheus.triton.overrides(),
        prometheus_dcgm=t.prometheus.dcgm.overrides(),
        timeout_s=cfg.triton.timeout_s,
        config_max_age_s=cfg.triton.config_max_age_s,
        triton_security=endpoints.triton,
        prometheus_security=endpoints.prometheus,
        simulated_gpus=t.simulated_gpus,
        simulated_gpu_memory_bytes=int(t.simulated_gpu_memory_gb * GB),
        instances=instances,
        instance_memory_bytes={
            n: int(tg.memory_per_instance_gb * GB) for n, tg in resolved.targets.items()
        },
    )
    if cfg.kubernetes is not None:  # pods × instances per pod (autoscaler/kubernetes/pods.py)
        return Combined(pod_source(cfg), gpu_source(t.gpus, opts))
    return Combined(model_source(t.models, opts), gpu_source(t.gpus, opts))


def pod_source(cfg: DaemonConfig, client: Any = None, timeout_s: float | None = None) -> Any:
    """Kubernetes mode's model source: pods × instances per pod, read from Prometheus.

    `client` answers its queries instead of the live Prometheus: a `RangeClient` over
    the past (autoscaler/resume.py), whose first query of each kind fetches the whole
    range and so gets `timeout_s` rather than a tick's `triton.timeout_s`.
    """
    from autoscaler.kubernetes.pods import PodModelSource
    from autoscaler.telemetry.base import triton_queries

    k, t = cfg.kubernetes, cfg.telemetry
    assert k is not None and t.prometheus_url is not None  # the config's checks require both
    opts = SourceOptions(
        prometheus_selector=t.prometheus.selector, prometheus_triton=t.prometheus.triton.overrides()
    )
    return PodModelSource(
        t.prometheus_url,
        instances_per_pod={d.model: d.instances_per_pod for d in k.deployments.values()},
        pod_label=k.pod_label,
        timeout_s=cfg.triton.timeout_s if timeout_s is None else timeout_s,
        queries=triton_queries(opts),
        client=client,
    )


def resume_from_pods(daemon: Autoscaler, session: Any, now: float) -> Resumed:
    """Kubernetes mode: the daemon's pod source over Prometheus' past (autoscaler/resume.py).

    Learnt with `decide` itself, as from a trace (the fleet's room advisor adds reasons,
    not state). GPUs are not read for the past: what the policy learns comes from the
    models' series, and Kubernetes mode reads none (`gpus: none`).
    """
    from autoscaler.telemetry.base import NoSource

    cfg = daemon.resolved.config
    url = cfg.telemetry.prometheus_url
    assert url is not None  # Kubernetes mode requires it
    return resume_from_prometheus(
        daemon,
        lambda client: Combined(pod_source(cfg, client, timeout_s=600.0), NoSource()),
        url,
        session,
        now,
        policy_fn=decide,
    )


def _log_resumed(log: Any, event: str, resumed: Resumed, **where: Any) -> None:
    """The start-up line of a resume: a warning when something could not be read."""
    if resumed.warnings:
        log.warning(event, **where, **resumed.to_log())
    else:
        log.info(event, **where, **resumed.to_log())


def make_actuator(cfg: DaemonConfig, log: Any, endpoints: Endpoints | None = None) -> Any:
    """The Triton actuator in apply mode, if Triton runs with explicit model control."""
    if cfg.mode != "apply":
        return None
    from autoscaler.actuation import TritonActuator

    endpoints = endpoints or load_endpoints(cfg)
    act = TritonActuator(cfg.triton.url, grpc_url=cfg.triton.grpc_url, security=endpoints.triton)
    ok, why = act.check_model_control()
    if not ok:
        log.warning("apply_unavailable_falling_back_to_recommend", reason=why)
        return None
    warn_about_rate_limit(cfg.triton.url, log)
    return act


def warn_about_rate_limit(triton_url: str, log: Any) -> None:
    """Say at start-up whether Triton schedules with --rate-limit=execution_count.

    Without it, Triton 2.51 finishes an in-place instance change only when the model's
    queue drains: under load (when scaling up matters) that can take minutes
    (docs/reliability.md). Read from the local server's command line when it can be.
    """
    from autoscaler.triton_flags import RECOMMENDED_RATE_LIMIT, rate_limit_setting

    setting = rate_limit_setting(triton_url)
    if setting.value is None:
        log.info("triton_rate_limit_unknown", how_to_check=setting.how)
    elif not setting.recommended:
        log.warning(
            "triton_rate_limit_not_recommended",
            rate_limit=setting.value,
            recommended=RECOMMENDED_RATE_LIMIT,
            read_from=setting.how,
            why="without it an in-place instance change waits until the model's request "
            "queue drains (minutes under load); see docs/reliability.md",
        )


def make_recorder(
    path: Path | None, source: str = "<config>", max_mb: float | None = None
) -> Callable[[Snapshot], None] | None:
    """The daemon's trace (config `record:`): appended to, one flushed line per tick.

    With `record_max_mb` it is kept as `<record>.1` once it passes that size and a new
    one starts (`TraceWriter._rotate`).
    """
    if path is None:
        return None
    from autoscaler.telemetry.trace import TraceWriter

    max_bytes = None if max_mb is None else int(max_mb * 1e6)
    try:
        writer = TraceWriter(path, max_bytes=max_bytes)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the trace for appending: {exc.strerror or exc}",
            file=source,
            field="record",
            value=str(path),
        ) from None
    return writer.write


def check_listen(listen: str, source: str = "<config>") -> str:
    """Whether `run` could listen on http.listen here: '' if so, else a note.

    Raises a ConfigError when it never could (not an address of this machine);
    returns a note when the port is taken now (a running daemon holds its own
    port while its next config is validated, so that is no error).
    """
    from autoscaler.transport import parse_listen

    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"http.listen {listen} is in use now (by the running daemon?)"
        if isinstance(exc, socket.gaierror) or exc.errno in (
            errno.EADDRNOTAVAIL,
            errno.EAFNOSUPPORT,
        ):
            raise ConfigError(
                f"cannot listen there: {exc.strerror or exc} (not an address of this machine)",
                file=source,
                field="http.listen",
                value=listen,
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                "cannot listen there: permission denied (ports below 1024 need privileges)",
                file=source,
                field="http.listen",
                value=listen,
            ) from None
        return f"http.listen {listen}: {exc.strerror or exc}"
    return ""


def _sd_notifier() -> Callable[[str], None]:
    """sd_notify(3) over $NOTIFY_SOCKET, a no-op when not run by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return lambda _msg: None
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(msg: str) -> None:
        with contextlib.suppress(OSError):
            sock.sendto(msg.encode(), addr)

    return send
