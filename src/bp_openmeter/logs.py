"""Structured JSON logs on stdout (one object per line), via structlog.

Libraries that log through the standard library (uvicorn, nats, psycopg) are
rendered by the same JSON renderer, so every line of a pod's log parses. Every line,
ours and theirs, exception text included, passes the one redaction of secrets
(redaction.py) last, so no URL credentials or password reach the log whoever wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, MutableMapping

import structlog
from structlog.typing import FilteringBoundLogger, Processor

from .redaction import redact_value

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
]


def _redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {key: redact_value(key, value) for key, value in event_dict.items()}


def configure(level: str = "info", component: str = "") -> None:
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            _redact_secrets,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    if component:
        structlog.contextvars.bind_contextvars(component=component)

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_secrets,
                structlog.processors.EventRenamer("msg"),
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    for noisy in ("uvicorn.access", "httpx", "httpcore"):  # a line per request: access logs, not events
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> FilteringBoundLogger:
    return structlog.get_logger(source=name)
