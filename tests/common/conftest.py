"""Fixtures for tests/common: a metrics mesh scraped by a real Prometheus.

`scraped_metric_names` is the set of metric names Prometheus stored after scraping the
runtime, tools and controller (each exercised once on every path: see metrics_mesh.py).
Tests that check dashboards or alerts against what the services really export use it:

    def test_dashboard_queries_exist(scraped_metric_names):
        assert "inloop_tokens_total" in scraped_metric_names

Histograms appear as their series names (`..._bucket`, `..._sum`, `..._count`), exactly as
a PromQL query names them.
"""
from __future__ import annotations

import pytest

from tests.common.metrics_mesh import MetricsMesh, start_metrics_mesh
from tests.common.prometheus_harness import prometheus_binary


@pytest.fixture(scope="module")
def metrics_mesh(tmp_path_factory) -> MetricsMesh:
    """The three services + Prometheus, exercised and scraped; stopped after the module."""
    try:
        prometheus_binary()
    except FileNotFoundError as exc:  # CI installs it; elsewhere say exactly what is missing
        pytest.fail(str(exc))
    mesh = start_metrics_mesh(tmp_path_factory.mktemp("metrics-mesh"))
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
def scraped_metric_names(metrics_mesh) -> set[str]:
    return metrics_mesh.prometheus.metric_names()
