"""Structured logs: one JSON object per line on stderr, for every inloop service.

Each line carries `timestamp` (ISO 8601, UTC), `level`, `service`, `logger`, `event` and,
inside an OpenTelemetry span, `trace_id`/`span_id` (hex, as the W3C traceparent writes
them) so a log line can be joined to its trace. Records from the standard `logging`
module (grpc, asyncio, libraries) go through the same processors, so stderr is JSON only.

    configure_logging("runtime", level="info")
    log = get_logger(__name__)
    log.info("request_done", request_id=rid, completion_tokens=n)
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

try:  # the API package is a dependency of opentelemetry-sdk, but logs must never need it
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover
    _otel_trace = None

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


def add_trace_context(_logger: Any, _method: str, event_dict: dict) -> dict:
    """Add trace_id/span_id of the current span, when there is a valid one."""
    if _otel_trace is not None:
        ctx = _otel_trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
            event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def _add_service(service: str):
    def processor(_logger: Any, _method: str, event_dict: dict) -> dict:
        event_dict.setdefault("service", service)
        return event_dict
    return processor


def _shared_processors(service: str) -> list:
    """Processors both structlog and stdlib records go through, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_service(service),
        add_trace_context,
    ]


def _benign_detach(record: logging.LogRecord) -> bool:
    """OpenTelemetry logs "Failed to detach context" with a traceback at error level when a
    cancelled gRPC stream's span ends on another task than it began: the span is fine, the
    line is noise that looks like a failure. It becomes a debug line, without the traceback."""
    if record.name == "opentelemetry.context" and record.getMessage().startswith("Failed to detach context"):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def configure_logging(service: str, level: str = "info") -> None:
    """Send structlog and stdlib logging to stderr as JSON lines. Safe to call again."""
    try:
        numeric = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None
    shared = _shared_processors(service)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # so a second configure (tests) takes effect
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    # Look sys.stderr up now, not at import, so pytest's capture and redirects apply.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_benign_detach)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A logger whose lines carry `logger=name` plus any bound key/values."""
    return structlog.get_logger(name, **initial)
