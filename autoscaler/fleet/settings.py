"""The config's `fleet` section: where a daemon reads its fleet to name a server with room."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from autoscaler.fleet.view import STALE_AFTER_S
from autoscaler.strict_model import StrictModel
from autoscaler.telemetry.promql import check_label_name, check_selector
from autoscaler.transport import check_http_url

Selector = Annotated[str, Field(max_length=1000), AfterValidator(check_selector)]
LabelName = Annotated[str, Field(max_length=200), AfterValidator(check_label_name)]


class FleetSection(StrictModel):
    """The daemons' own series in one Prometheus (docs/fleet.md)."""

    model_config = ConfigDict(frozen=True)

    # checked as telemetry.prometheus_url is: "nope" passed `validate` here
    prometheus_url: (
        Annotated[str, Field(max_length=2000), AfterValidator(check_http_url)] | None
    ) = Field(default=None, description="default: telemetry.prometheus_url")
    selector: Selector = Field(
        default="",
        description='label matchers picking the daemons\' series, e.g. job="triton-autoscaler"',
    )
    server_label: LabelName = Field(
        default="instance", description="the label that names a server on the daemons' series"
    )
    server: str | None = Field(
        default=None,
        max_length=253,
        description="this daemon's own value of server_label (left out of the answers)",
    )
    refresh_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    stale_after_s: Annotated[float, Field(gt=0, le=86400)] = STALE_AFTER_S
