"""JSON logs (services/common/logging.py): OpenTelemetry's benign "Failed to detach context"
(a cancelled stream's span ending on another task) is not logged as an error."""
from __future__ import annotations

import json
import logging

from inloop.services.common.logging import configure_logging


def _detach_failure() -> None:
    try:
        raise ValueError("<Token ...> was created in a different Context")
    except ValueError:
        logging.getLogger("opentelemetry.context").exception("Failed to detach context")


def test_failed_to_detach_context_is_a_debug_line_without_a_traceback(capsys):
    configure_logging("tools", "info")
    _detach_failure()
    logging.getLogger("inloop.test").error("a real error")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["a real error"]
    configure_logging("tools", "debug")
    _detach_failure()
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert line["level"] == "debug" and "exception" not in line
    configure_logging("tools", "info")
