"""Logging: JSON lines to a file (with the run id on every record) and rich on the console."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from utils.files import touch_private
from utils.urls import mask_secrets

current_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, run_id, message (secrets masked)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "run_id": current_run_id.get(),
            "message": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class MaskSecrets(logging.Filter):
    """Masks URL passwords and secret parameters in every record a handler emits (the console
    too: a driver's error text can hold a connection string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _user_only_file_handler(path: Path) -> logging.FileHandler:
    return logging.FileHandler(touch_private(path), encoding="utf-8")


def configure_logging(level: str, log_file: Path | None, console: bool = True) -> None:
    """Install the file and console handlers on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_rdp", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)
    if log_file is not None:
        file_handler = _user_only_file_handler(log_file)
        file_handler.setFormatter(JsonLineFormatter())
        file_handler.setLevel(logging.DEBUG)
        file_handler._rdp = True  # type: ignore[attr-defined]
        file_handler.addFilter(MaskSecrets())
        root.addHandler(file_handler)
    if console:
        from rich.console import Console
        from rich.logging import RichHandler

        console_handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        console_handler.setLevel(level.upper())
        console_handler._rdp = True  # type: ignore[attr-defined]
        console_handler.addFilter(MaskSecrets())
        root.addHandler(console_handler)
