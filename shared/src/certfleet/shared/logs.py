"""Log output for both commands: text for a terminal, or one JSON object per line
(``CERTFLEET_LOG_FORMAT=json``) for journald, Loki, Elasticsearch and the like."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

__all__ = ["JsonFormatter", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}``, plus ``exception`` when there is one.
    The timestamp is RFC 3339 in UTC with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {"ts": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int = logging.INFO) -> None:
    """Log to stderr in the format ``CERTFLEET_LOG_FORMAT`` names (``text``, the
    default, or ``json``); an unknown value is an error, not a silent default."""
    chosen = os.environ.get("CERTFLEET_LOG_FORMAT", "text").strip().lower() or "text"
    if chosen not in ("text", "json"):
        raise SystemExit(f"CERTFLEET_LOG_FORMAT must be text or json, not {chosen!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
