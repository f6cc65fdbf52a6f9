"""The two-host lab's wire-time table in both reports."""
import copy

from inloop.loadgen.report import render_html, render_markdown, validate

LAB = {"mechanism": "relay", "delay_ms": 0.25, "jitter_ms": 0.05, "hosts": {},
       "wire_by_hop": {"controller->runtime": {"from": "cpu-host", "to": "gpu-host", "cross_host": True,
                                               "n": 12, "mean_ms": 2.4, "median_ms": 2.2},
                       "controller->tools": {"from": "cpu-host", "to": "cpu-host", "cross_host": False,
                                             "n": 9, "mean_ms": 0.9, "median_ms": 0.8}},
       "comparison": {"cross_host_mean_ms": 2.4, "same_host_mean_ms": 0.9, "excess_ms": 1.5, "round_trip_ms": 0.5}}


def test_the_lab_section_renders_in_markdown_and_html(artifact):
    doc = copy.deepcopy(artifact)
    doc["matrix"]["lab"] = LAB
    validate(doc)
    md = render_markdown(doc)
    assert "Two-host lab: wire time per hop (relay, delay 0.25 ms ± 0.05 ms each way)" in md
    assert "| controller->runtime | cpu-host | gpu-host | yes | 12 | 2.40 ms | 2.20 ms |" in md
    assert "1.50 ms more, for a configured round trip of 0.50 ms" in md
    assert "controller-&gt;tools" in render_html(doc)


def test_no_lab_no_table(artifact):
    assert "Two-host lab" not in render_markdown(artifact)
