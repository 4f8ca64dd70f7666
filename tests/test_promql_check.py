"""Configured PromQL is checked for balanced brackets and quotes (promql.check_query),
and the verdicts agree with Prometheus' own parser (`promtool check rules`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoscaler.telemetry.prometheus import SEL, DcgmQueries, TritonQueries
from autoscaler.telemetry.promql import check_query
from tests.test_cli_contract import cli, write_config
from tests.test_deploy import run_tool

GOOD = [
    "sum((rate(x[1m])))",
    'sum(rate(x{a="("}[1m]))',  # a bracket inside a string
    "max(x{a=`[`})",  # a raw string
    'x{a="\\"("}',  # an escaped quote
    "sum(x) # (a comment",
    "sum by (model) (rate(nv_inference_request_success[5m]))",
]
BAD = [
    ("sum((rate(x[1m]))", "'(' at character 4 of the query is not closed"),
    ('x{a="b}', "the string opened at character 5 is not closed"),
    ("x]", "unbalanced ']' at character 2"),
    ("sum(x[1m)]", "unbalanced ')' at character 9"),
    ("sum(x}", "unbalanced '}' at character 6"),
]


def promtool_accepts(tmp_path: Path, expr: str) -> bool:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "t", "rules": [{"record": "r", "expr": expr}]}]})
    )
    return run_tool("promtool", "check", "rules", str(rules)).returncode == 0


@pytest.mark.parametrize("query", GOOD)
def test_balanced_queries_pass_as_promtool_parses_them(tmp_path: Path, query: str) -> None:
    assert check_query(query) == query
    assert promtool_accepts(tmp_path, query)


@pytest.mark.parametrize(("query", "why"), BAD)
def test_unbalanced_queries_are_refused_as_promtool_refuses_them(
    tmp_path: Path, query: str, why: str
) -> None:
    with pytest.raises(ValueError) as exc:
        check_query(query)
    assert why in str(exc.value)
    assert not promtool_accepts(tmp_path, query)


def test_the_built_in_queries_pass() -> None:
    t, d = TritonQueries(), DcgmQueries()
    queries = [*t.counters.values(), t.pending, t.p95_request, t.p95_queue, t.histogram, t.as_of]
    for q in [*queries, d.used, d.free, d.reserved, d.util]:
        check_query(q.replace(SEL, 'job="triton"'))


def test_validate_names_the_query(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml",
        telemetry={
            "gpus": "none",
            "models": "prometheus",
            "prometheus_url": "http://127.0.0.1:9090",
            "prometheus": {"triton": {"pending": "sum((nv_inference_pending_request_count)"}},
        },
    )
    code, _, err = cli("validate", str(cfg))
    assert code == 2, err
    assert "telemetry.prometheus.triton.pending" in err and "is not closed" in err, err
