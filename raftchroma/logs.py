"""Log output of both processes of a node: plain text lines, or one JSON object per line.

Owns: the two formats and installing them on the root logger (the node's process from the CLI,
the Raft child from raft_process.py, which marks its lines as Raft's). It must not decide what
is logged, nor read the environment: the CLI passes the format down.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
from types import TracebackType

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, node, logger, msg, and exc with the
    traceback if there is one; `process` is "raft" on the Raft child's lines."""

    def __init__(self, node_id: str, process: str | None = None) -> None:
        super().__init__()
        self._node_id = node_id
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": self._node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._process:
            line["process"] = self._process
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str | int, node_id: str, log_format: str = "text", process: str | None = None) -> None:
    """Send every log record to stderr in `log_format`. In JSON, also Python warnings and uncaught
    exceptions (of any thread), so that every line on stderr parses."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id, process))
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)
    else:
        tag = f" [{process}]" if process else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s{tag}: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def current_format() -> str:
    """The format `configure` installed in this process ("text" if it was not called), so that
    the Raft child writes its lines like its parent."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


def _log_uncaught(exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None) -> None:
    logging.getLogger("raftchroma").critical("uncaught exception", exc_info=(exc_type, exc, tb))
