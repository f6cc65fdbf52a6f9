"""The Grafana dashboard queries only the shared metric names, shows what the brief asks for,
and its PromQL parses; the Prometheus configs parse and scrape the three metrics ports.

Metric names come from a real PromQL parser (PyPI promql-parser, the `test` extra) walking
each expression's syntax tree; `promtool check rules` (Debian's prometheus package) parses
every expression again with Prometheus's own parser, and `promtool check config` checks the
scrape configs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.shared_names import DEPLOY, SERVICES, metric_family
from tests.deploy.tooling import require_tool, run

DASHBOARD = DEPLOY / "grafana/dashboards/inloop-hop-overhead.json"
PROMETHEUS_CONFIGS = sorted((DEPLOY / "prometheus").glob("*.yml"))
# Grafana's interval variables are not PromQL; any fixed range stands in for them.
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")


def promql(expr: str) -> str:
    return GRAFANA_VARIABLES.sub("5m", expr)


def series_names(expr: str) -> list[str]:
    """Every series a PromQL expression selects, from its syntax tree."""
    parser = pytest.importorskip("promql_parser", reason="pip install '.[test]' (promql-parser)")
    names = []

    def visit(node):
        if isinstance(node, parser.VectorSelector):
            assert node.name, f"select metrics by name, not by __name__ matchers: {expr}"
            names.append(node.name)

    parser.walk(parser.parse(promql(expr)), visit)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions(dashboard) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def test_parser_finds_series_inside_functions_and_aggregations():
    names = series_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[$__rate_interval])))'
                         ' / on() group_left sum(b_total offset 5m)')
    assert names == ["a_bucket", "b_total"]
    # and the name check rejects near misses: a counter suffix on a histogram, a histogram
    # suffix on a counter
    assert metric_family("inloop_hop_duration_seconds_bucket") == "inloop_hop_duration_seconds"
    assert metric_family("inloop_hop_duration_seconds_total") is None
    assert metric_family("inloop_tasks_total_count") is None


def test_dashboard_queries_only_shared_metric_names(dashboard):
    unknown = [(title, name) for title, expr in expressions(dashboard)
               for name in series_names(expr) if metric_family(name) is None]
    assert unknown == [], f"not a shared metric name: {unknown}"


def test_dashboard_shows_what_the_brief_asks_for(dashboard):
    assert dashboard["title"] == "inloop hop overhead"
    exprs = [expr for _, expr in expressions(dashboard)]
    families = {metric_family(n) for e in exprs for n in series_names(e)}
    assert families >= {"inloop_hop_duration_seconds", "inloop_hop_retries_total", "inloop_tasks_total",
                        "inloop_task_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
                        "inloop_queue_depth"}

    def any_expr(*needles):
        return any(all(n in e for n in needles) for e in exprs)

    for phi in ("0.5", "0.99"):
        assert any_expr(f"histogram_quantile({phi}", "inloop_hop_duration_seconds_bucket", "hop")
        assert any_expr(f"histogram_quantile({phi}", "gen_ai_server_time_to_first_token_seconds_bucket")
    assert any_expr("inloop_tasks_total", "error_type")
    # the ratio: mean external task duration over mean internal task duration
    assert any_expr('inloop_task_duration_seconds_sum{route="external"}', 'inloop_task_duration_seconds_count{route="external"}',
                    'inloop_task_duration_seconds_sum{route="internal"}', 'inloop_task_duration_seconds_count{route="internal"}')


def test_dashboard_expressions_parse_with_promtool(dashboard, tmp_path):
    tool = require_tool("promtool")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": promql(expr)}
        for i, (_, expr) in enumerate(expressions(dashboard))]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([tool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_scrapes_the_metrics_ports(path):
    config = yaml.safe_load(path.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    ports = sorted(int(t.rsplit(":", 1)[1]) for t in targets)
    assert ports == sorted(s.metrics_port for s in SERVICES.values())
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


@pytest.mark.parametrize("path", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(path: Path, tmp_path: Path):
    tool = require_tool("promtool")
    text = path.read_text()
    if "/etc/prometheus/inloop/" in text:
        # promtool opens the scrape TLS files: give it real ones from a dev CA, where they would be.
        from inloop.services.common.certs_cli import make_dev_pki

        make_dev_pki(tmp_path / "pki")
        tls = tmp_path / "inloop"
        tls.mkdir()
        for src, dst in (("ca.crt", "ca.crt"), ("loadgen.crt", "client.crt"), ("loadgen.key", "client.key")):
            (tls / dst).write_bytes((tmp_path / "pki" / src).read_bytes())
        path = tmp_path / path.name
        path.write_text(text.replace("/etc/prometheus/inloop/", f"{tls}/"))
    result = run([tool, "check", "config", str(path)])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout
