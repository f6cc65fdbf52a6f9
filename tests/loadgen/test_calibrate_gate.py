"""Fitting the uncertainty gate's default threshold, and how tasks pick it up."""
import json

import pytest

from inloop.loadgen.calibrate_gate import fit, youden_threshold
from inloop.services.common import gate_defaults
from inloop.services.common.task_convert import task_from_proto
from inloop.v1 import runtime_pb2 as pb


def test_youden_threshold_separates_failed_from_passed():
    values = [-2.0, -1.5, -1.2, -0.4, -0.3, -0.1]
    failed = [True, True, False, True, False, False]
    threshold, j = youden_threshold(values, failed)
    # below -0.8: 2 of 3 failed, 0 of 3 passed -> J = 2/3; below -0.35 also catches one passed: J = 1/3
    assert threshold == pytest.approx((-1.5 + -1.2) / 2) and j == pytest.approx(2 / 3)


def test_youden_needs_both_classes():
    with pytest.raises(ValueError, match="both passed and failed"):
        youden_threshold([-1.0, -2.0], [True, True])


def test_fit_picks_the_statistic_that_separates_better():
    records = [{"passed": p, "answer_stats": {"mean_logprob": lp, "min_margin": m}}
               for p, lp, m in [(True, -0.2, 0.1), (True, -0.3, 3.0), (False, -1.0, 2.0), (False, -2.0, 0.2)]]
    records.append({"passed": False})  # a failed task without an answer is not an answer
    out = fit(records)
    assert out["statistic"] == "mean_logprob" and out["youden_j"] == pytest.approx(1.0)
    assert out["threshold"] == pytest.approx(-0.65) and out["answers"] == 4 and out["tasks"] == 5
    assert out["fits"]["min_margin"]["youden_j"] < 1.0


def test_a_gate_without_threshold_gets_the_calibrated_default(tmp_path, monkeypatch):
    path = tmp_path / "gate_calibration.json"
    path.write_text(json.dumps({"statistic": "min_margin", "threshold": 0.7, "answers": 40,
                                "model": {"name": "m"},
                                "fits": {"min_margin": {"threshold": 0.7}, "mean_logprob": {"threshold": -0.9}}}))
    monkeypatch.setattr(gate_defaults, "CALIBRATION_FILE", path)
    gate_defaults.calibration.cache_clear()
    try:
        def gate_of(**kw):
            req = pb.TaskRequest(messages=[pb.ChatMessage(role="user", content="hi")], tools=["search"])
            req.gate.CopyFrom(pb.GateConfig(enabled=True, **kw))
            return task_from_proto(req).gate
        assert (gate_of().statistic, gate_of().threshold) == ("min_margin", 0.7)
        g = gate_of(statistic="mean_logprob")
        assert (g.statistic, g.threshold) == ("mean_logprob", -0.9)
        g = gate_of(statistic="mean_logprob", threshold=-3.0)  # an explicit threshold wins
        assert g.threshold == -3.0
        assert "calibrated on 40" in gate_defaults.default_gate()[2]
    finally:
        gate_defaults.calibration.cache_clear()


def test_the_shipped_calibration_names_its_model_and_split():
    cal = json.loads(gate_defaults.CALIBRATION_FILE.read_text())
    assert cal["split"] == "calibration" and cal["model"]["sha256"]
    assert cal["statistic"] in gate_defaults.STATISTICS and cal["fits"][cal["statistic"]]["threshold"] == cal["threshold"]
    assert all(case_id for case_id in cal["cases"])
