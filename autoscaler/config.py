"""The daemon's configuration file (YAML), validated like every profile.

`deploy/config.example.yaml` is the documented example; `triton-autoscaler
validate` accepts it. Per model, targets come from the model's profile in
`policies/` unless the config overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from autoscaler.catalog import Catalog, load_catalog, read_yaml_documents, validation_error
from autoscaler.errors import ConfigError
from autoscaler.fleet.settings import FleetSection
from autoscaler.kubernetes.settings import KubernetesSection, check_config, replica_policy
from autoscaler.notify import NotifierList
from autoscaler.policy.target import ModelTarget, service_model
from autoscaler.profiles import ModelProfile, Name, ScalingPolicy
from autoscaler.strict_model import StrictModel
from autoscaler.telemetry.promql import check_label_name, check_query, check_selector
from autoscaler.telemetry.snapshot import MAX_GPU_MEMORY_GB
from autoscaler.transport import (
    AuthSettings,
    Security,
    TlsSettings,
    check_endpoint,
    check_http_url,
    check_secure_url,
    load_security,
    parse_listen,
)

CONFIG_KIND = "autoscaler-config"
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _listen(text: str) -> str:
    parse_listen(text)  # ValueError says what is wrong
    return text


def _grpc(text: str) -> str:
    return check_endpoint(text, schemes=("grpc", "grpcs", "http", "https"))


Endpoint = Annotated[str, Field(max_length=2000), AfterValidator(check_endpoint)]


HttpUrl = Annotated[str, Field(max_length=2000), AfterValidator(check_http_url)]
GrpcEndpoint = Annotated[str, Field(max_length=2000), AfterValidator(_grpc)]
ListenAddress = Annotated[str, Field(max_length=300), AfterValidator(_listen)]


_Strict = StrictModel


class TritonSection(_Strict):
    url: Endpoint = Field(
        default="127.0.0.1:8000",
        description="Triton HTTP endpoint: host:port, or https://host:port for TLS",
    )
    grpc_url: GrpcEndpoint | None = Field(
        default=None,
        description="Triton gRPC endpoint, host:port; when set, apply mode sends load_model "
        "there, so that a long load does not tie up one of Triton's HTTP worker threads "
        "(needs tritonclient[grpc])",
    )
    # a whole URL, scheme included: it is read as written ("foo" passed `validate` and
    # every tick then failed with "Invalid URL 'foo': No scheme supplied")
    metrics_url: HttpUrl | None = Field(
        default=None, description="default: http(s)://HOST:8002/metrics, the scheme of url"
    )
    tls: TlsSettings | None = Field(default=None, description="for https:// (docs/operations.md)")
    auth: AuthSettings | None = Field(
        default=None, description="a credential sent to Triton (e.g. --http-restricted-api's)"
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Model configs (instance groups) are re-read when the repository index changes,
    # after an apply, and at the latest after this long (spread per model over half
    # to all of it); 0 reads every config every tick. At 500 models a config read
    # costs 60–120 µs of CPU: every tick that is 30–60 ms, at 60 s ≈ 6 ms a tick.
    config_max_age_s: Annotated[float, Field(ge=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _tls_needs_https(self) -> TritonSection:
        urls = [u for u in (self.url, self.metrics_url, self.grpc_url) if u]
        secure = [u for u in urls if u.strip().lower().startswith(("https://", "grpcs://"))]
        if self.tls is not None and not secure:
            raise ValueError(
                "tls is set but no Triton address is https:// (or grpcs://): write "
                "url: https://HOST:PORT, or drop tls"
            )
        return self


Selector = Annotated[str, Field(max_length=1000), AfterValidator(check_selector)]
LabelName = Annotated[str, Field(max_length=200), AfterValidator(check_label_name)]
PromQL = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(check_query)]


def _path_given(value: Any) -> Any:
    # '' is Path('.'), the working directory: `record: ""` was refused as "is a
    # directory, not a trace file", naming a directory nobody wrote
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give the trace file's path, or null to record nothing")
    return value


TracePath = Annotated[Path, BeforeValidator(_path_given)]
# ModelCounters fields, as in autoscaler.telemetry.triton.COUNTERS (a test keeps them equal)
TritonCounter = Literal[
    "request_success",
    "request_failure",
    "request_duration_us",
    "queue_duration_us",
    "compute_input_duration_us",
    "compute_infer_duration_us",
    "compute_output_duration_us",
    "inference_count",
    "execution_count",
]
SEL = "__SEL__"  # autoscaler.telemetry.prometheus.SEL


class PrometheusTritonSection(_Strict):
    """Triton's series in Prometheus; unset queries keep the built-in ones."""

    counters: dict[TritonCounter, PromQL] = Field(default_factory=dict)
    pending: PromQL | None = None
    p95_request: PromQL | None = None
    p95_queue: PromQL | None = None
    as_of: PromQL | None = None
    model_label: LabelName = "model"
    version_label: LabelName = "version"

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for `TritonQueries` but the selector (what is set here)."""
        out: dict[str, Any] = {
            "model_label": self.model_label,
            "version_label": self.version_label,
        }
        if self.counters:
            out["counters"] = dict(self.counters)
        for k in ("pending", "p95_request", "p95_queue", "as_of"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


class PrometheusDcgmSection(_Strict):
    """The DCGM exporter's series in Prometheus; unset fields keep the built-in ones."""

    used: PromQL | None = Field(default=None, description="default DCGM_FI_DEV_FB_USED (MiB)")
    free: PromQL | None = Field(default=None, description="default DCGM_FI_DEV_FB_FREE (MiB)")
    reserved: PromQL | None = Field(
        default=None, description="default DCGM_FI_DEV_FB_RESERVED (MiB)"
    )
    util: PromQL | None = Field(default=None, description="default DCGM_FI_DEV_GPU_UTIL (%)")
    hostname_labels: Annotated[list[LabelName], Field(min_length=1, max_length=8)] | None = None
    uuid_labels: Annotated[list[LabelName], Field(min_length=1, max_length=8)] | None = None
    index_label: LabelName | None = None
    name_label: LabelName | None = None

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for `DcgmQueries` (what is set here)."""
        return {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in self.model_dump().items()
            if v is not None
        }


class PrometheusSection(_Strict):
    """The `prometheus` sources' settings (telemetry.models / gpus: prometheus)."""

    selector: Selector = Field(
        default="",
        description='label matchers picking one Triton\'s series, e.g. instance="10.0.0.5:8002"',
    )
    triton: PrometheusTritonSection = PrometheusTritonSection()
    dcgm: PrometheusDcgmSection = PrometheusDcgmSection()
    tls: TlsSettings | None = Field(default=None, description="for https:// (docs/operations.md)")
    auth: AuthSettings | None = Field(default=None, description="bearer or basic credential")

    @model_validator(mode="after")
    def _selector_has_a_place(self) -> PrometheusSection:
        # a query of one's own without the placeholder would silently ignore the
        # selector and add up every Triton's series again
        if not self.selector:
            return self
        t = self.triton
        own = {f"counters.{k}": v for k, v in t.counters.items()}
        own |= {k: getattr(t, k) for k in ("pending", "p95_request", "p95_queue", "as_of")}
        for name, query in own.items():
            if query is not None and SEL not in query:
                raise ValueError(
                    f"triton.{name} has no {SEL} placeholder, so the selector would not apply "
                    f"to it: write the metric as metric{{{SEL}}} "
                    f'(or metric{{quantile="0.95",{SEL}}})'
                )
        return self


class TelemetrySection(_Strict):
    models: Literal["triton", "prometheus"] = "triton"
    gpus: Literal["nvml", "prometheus", "simulated", "none"] = "nvml"
    prometheus_url: HttpUrl | None = None
    hostname: str | None = Field(default=None, description="DCGM series filter")
    prometheus: PrometheusSection = PrometheusSection()
    simulated_gpus: Annotated[int, Field(ge=1, le=64)] = 4
    # 1e308 GB passed, and its byte count overflowed when the simulated GPUs were built
    simulated_gpu_memory_gb: Annotated[float, Field(gt=0, le=MAX_GPU_MEMORY_GB)] = 80.0

    @model_validator(mode="after")
    def _prometheus_needs_url(self) -> TelemetrySection:
        uses = [k for k in ("models", "gpus") if getattr(self, k) == "prometheus"]
        if uses and not self.prometheus_url:
            raise ValueError(
                f"telemetry.{uses[0]} is 'prometheus' but telemetry.prometheus_url is not set"
            )
        url = self.prometheus_url or ""
        if self.prometheus.tls is not None and not url.lower().startswith("https://"):
            raise ValueError(
                "telemetry.prometheus.tls is set but telemetry.prometheus_url is not https://"
            )
        return self


class ModelSection(_Strict):
    profile: Name | None = Field(default=None, description="model profile; default: the key")
    optimal_concurrency: PositiveFloat | None = None
    memory_per_instance_gb: PositiveFloat | None = None
    slo_p95_ms: PositiveFloat | None = None
    min_instances: Annotated[int, Field(ge=0, le=1024)] | None = None
    max_instances: Annotated[int, Field(ge=1, le=1024)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ModelSection:
        lo, hi = self.min_instances, self.max_instances
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_instances ({lo}) must be ≤ max_instances ({hi})")
        return self


class HttpSection(_Strict):
    listen: ListenAddress = Field(
        default="127.0.0.1:9108",
        description="host:port for /metrics, /healthz and /status (port 0: any free one)",
    )
    unhealthy_after_s: Annotated[float, Field(gt=0, le=86400)] = 60.0


class LoggingSection(_Strict):
    # changes: a model's decision is logged when its action, counts or rule change,
    # and again every decision_reminder_s as a sign of life; every_tick: every
    # decision of every tick (at 500 models and 5 s ticks, 100 lines a second).
    decisions: Literal["changes", "every_tick"] = "changes"
    decision_reminder_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 300.0


class DaemonConfig(_Strict):
    kind: Literal["autoscaler-config"] = "autoscaler-config"
    mode: Literal["recommend", "apply"] = "recommend"
    triton: TritonSection = TritonSection()
    telemetry: TelemetrySection = TelemetrySection()
    policy: Name = Field(default="default", description="scaling-policy profile name")
    policy_overrides: dict[str, Any] = Field(default_factory=dict)
    policies_dirs: list[Path] = Field(default_factory=list)
    gpus_per_server: Annotated[int, Field(ge=1, le=64)] = 4
    max_changes_per_tick: Annotated[int, Field(ge=1, le=1024)] = 4
    models: dict[Name, ModelSection] = Field(default_factory=dict)
    http: HttpSection = HttpSection()
    logging: LoggingSection = LoggingSection()
    record: TracePath | None = Field(default=None, description="append the telemetry trace here")
    record_max_mb: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="once the trace passes this size, keep it as <record>.1 (replacing the "
        "one before) and start a new one: at most twice this on disk; unset: it only grows",
    )
    notifiers: NotifierList = Field(
        default_factory=list, description="where recommendations go (docs/notifications.md)"
    )
    kubernetes: KubernetesSection | None = Field(
        default=None, description="Kubernetes mode: pods scaled by KEDA/HPA (docs/kubernetes.md)"
    )
    fleet: FleetSection | None = Field(
        default=None, description="name servers with room when this one is full (docs/fleet.md)"
    )

    @model_validator(mode="after")
    def _need_models(self) -> DaemonConfig:
        if not self.models:
            raise ValueError("'models' is empty: name at least one model to watch")
        if self.fleet is not None and not (
            self.fleet.prometheus_url or self.telemetry.prometheus_url
        ):
            raise ValueError(
                "fleet needs a Prometheus: set fleet.prometheus_url (or telemetry.prometheus_url)"
            )
        if self.record_max_mb is not None and self.record is None:
            raise ValueError("record_max_mb limits the record: trace; set record too")
        if self.kubernetes is not None:
            check_config(
                self.kubernetes,
                mode=self.mode,
                models_source=self.telemetry.models,
                gpus_source=self.telemetry.gpus,
                models=self.models,
                policy_overrides=self.policy_overrides,
            )
        return self


class Resolved(BaseModel):
    """A config joined with the catalog: the policy and each model's targets."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    config: DaemonConfig
    policy: ScalingPolicy
    targets: dict[str, ModelTarget]
    catalog: Catalog


@dataclass(frozen=True)
class Endpoints:
    """TLS files and credentials of the endpoints a config names, read and checked."""

    triton: Security
    prometheus: Security


def load_endpoints(cfg: DaemonConfig, source: str | Path = "<config>") -> Endpoints:
    """Read every file and secret the config names (`run` at start and on SIGHUP, `validate`).

    A missing file, an empty secret, a CA bundle that is not PEM or a credential
    over plain http to another machine is a ConfigError naming the field.
    """
    src = str(source)
    t = cfg.triton
    triton = load_security(t.tls, t.auth, url=t.url, source=src, prefix="triton")
    if t.auth is not None:
        for name in ("metrics_url", "grpc_url"):
            url = getattr(t, name)
            if url:
                check_secure_url(url, source=src, field=f"triton.{name}")
    p = cfg.telemetry.prometheus
    prometheus = load_security(
        p.tls, p.auth, url=cfg.telemetry.prometheus_url, source=src, prefix="telemetry.prometheus"
    )
    return Endpoints(triton=triton, prometheus=prometheus)


def parse_config(data: Any, source: str | Path = "<config>") -> DaemonConfig:
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping", file=source)
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, doc=data) from exc


def load_config(path: Path) -> DaemonConfig:
    docs = read_yaml_documents(path)
    if len(docs) != 1:
        raise ConfigError(f"expected one YAML document, found {len(docs)}", file=path)
    return parse_config(docs[0], path)


def resolve(cfg: DaemonConfig, source: str | Path = "<config>") -> Resolved:
    """Join the config with the profiles; unknown names list the known ones."""
    cat = load_catalog(cfg.policies_dirs)
    policy = _policy_of(cfg, cat, source)
    targets: dict[str, ModelTarget] = {}
    # With no GPU watched (telemetry.gpus: none) nothing is placed on a GPU, so a
    # model needs no memory figure: 0 GB per instance, never used for a decision.
    needs_memory = cfg.telemetry.gpus != "none"
    for name, m in cfg.models.items():
        targets[name] = _model_target(name, m, cat, needs_memory, source)
        _check_instance_bounds(name, m, policy, source)
    return Resolved(config=cfg, policy=policy, targets=targets, catalog=cat)


def _policy_of(cfg: DaemonConfig, cat: Catalog, source: str | Path) -> ScalingPolicy:
    """The scaling policy the config names, with its `policy_overrides` applied."""
    if cfg.policy not in cat.policies:
        raise ConfigError(
            "unknown scaling policy",
            file=source,
            field="policy",
            value=cfg.policy,
            allowed=cat.policies,
        )
    base = cat.policies[cfg.policy]
    try:
        policy = ScalingPolicy.model_validate({**base.model_dump(), **cfg.policy_overrides})
    except ValidationError as exc:
        raise validation_error(exc, source, prefix="policy_overrides") from exc
    if cfg.kubernetes is not None:
        policy = replica_policy(policy)  # the HPA's behavior limits the pods' pace
    return policy


def _model_target(
    name: str, m: ModelSection, cat: Catalog, needs_memory: bool, source: str | Path
) -> ModelTarget:
    """One model's target: its own figures, the rest from its profile when there is one."""
    prof_name = m.profile or name
    if prof_name not in cat.models:
        opt_c, mem = _figures_without_profile(name, m, prof_name, cat, needs_memory, source)
        startup = None
        service = None
    else:
        prof = cat.models[prof_name]
        opt_c, mem = _figures_from_profile(name, m, prof_name, prof, source)
        startup = prof.startup_s
        service = service_model(prof)
    assert opt_c is not None and mem is not None  # both checked above
    return ModelTarget(
        model=name,
        optimal_concurrency=float(opt_c),
        memory_per_instance_gb=float(mem),
        slo_p95_ms=m.slo_p95_ms,
        min_instances=m.min_instances,
        max_instances=m.max_instances,
        startup_s=startup,
        service=service,
    )


def _figures_without_profile(
    name: str,
    m: ModelSection,
    prof_name: str,
    cat: Catalog,
    needs_memory: bool,
    source: str | Path,
) -> tuple[float | None, float]:
    """Optimal concurrency and memory per instance of a model no profile describes.

    Both must be in the config (memory only when GPUs are watched); the error says
    which flag gives the missing one.
    """
    no_memory = m.memory_per_instance_gb is None or not needs_memory
    if m.optimal_concurrency is None and no_memory:
        what = (
            "give both optimal_concurrency and memory_per_instance_gb "
            f"(run: --target {name}=C --memory-gb {name}=GB)"
            if needs_memory
            else f"give optimal_concurrency (run: --target {name}=C)"
        )
        raise ConfigError(
            f"no model profile '{prof_name}': name a known profile, or {what}",
            file=source,
            field=f"models.{name}.profile",
            allowed=cat.models,
        )
    for key, value, flag, unit in (
        ("optimal_concurrency", m.optimal_concurrency, "--target", "C"),
        ("memory_per_instance_gb", m.memory_per_instance_gb, "--memory-gb", "GB"),
    ):
        if key == "memory_per_instance_gb" and not needs_memory:
            continue
        if value is None:
            raise ConfigError(
                f"no model profile '{prof_name}' to take {key} from: set it "
                f"(run: {flag} {name}={unit}), or name a profile (--profile {name}=NAME)",
                file=source,
                field=f"models.{name}.{key}",
            )
    opt_c: float | None = m.optimal_concurrency
    mem = m.memory_per_instance_gb if m.memory_per_instance_gb is not None else 0.0
    return opt_c, mem


def _figures_from_profile(
    name: str, m: ModelSection, prof_name: str, prof: ModelProfile, source: str | Path
) -> tuple[float, float]:
    """Optimal concurrency and memory per instance: the config's, else the profile's."""
    opt_c = m.optimal_concurrency or (prof.optimum.concurrency if prof.optimum else None)
    if opt_c is None:
        raise ConfigError(
            f"profile '{prof_name}' has no optimal concurrency: set "
            f"models.{name}.optimal_concurrency or profile the model",
            file=source,
            field=f"models.{name}.optimal_concurrency",
        )
    mem = m.memory_per_instance_gb or prof.instance_memory()[0]
    return opt_c, mem


def _check_instance_bounds(
    name: str, m: ModelSection, policy: ScalingPolicy, source: str | Path
) -> None:
    """The model's instance bounds, each its own or the policy's, must not cross."""
    lo = policy.min_instances if m.min_instances is None else m.min_instances
    hi = policy.max_instances if m.max_instances is None else m.max_instances
    if lo > hi:
        raise ConfigError(
            f"min_instances ({lo}) must be ≤ max_instances ({hi}) (one comes from the policy)",
            file=source,
            field=f"models.{name}",
        )
