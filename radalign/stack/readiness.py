"""Waiting for a component to become ready, with a deadline and an error that says why not."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from radalign.stack.process import tail


class StackStartError(RuntimeError):
    """A component did not become ready; the message carries the end of its log."""


def tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until_ready(
    what: str,
    check: Callable[[], bool],
    *,
    timeout_s: float,
    log_file: Path | None = None,
    proc: psutil.Process | None = None,
    interval_s: float = 0.1,
) -> float:
    """Poll `check` until it returns True; returns the seconds waited.

    Fails fast when `proc` exits, and after `timeout_s` otherwise, with the last log lines.
    `check` must not raise for "not yet" (return False instead).
    """
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if proc is not None and (not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE):
            raise StackStartError(_message(f"{what} exited before it was ready", log_file))
        if time.monotonic() - start > timeout_s:
            raise StackStartError(_message(f"{what} was not ready after {timeout_s:.0f} s", log_file))
        time.sleep(interval_s)


_ERROR_LINE = re.compile(r"^(E\d{4} |FATAL|ERROR|PANIC)|\b(error|failed|Traceback)\b", re.IGNORECASE)


def log_excerpt(log_file: Path, errors: int = 10, last: int = 20) -> str:
    """The error-looking lines of the latest run in `log_file`, then its last lines: servers such
    as Triton print the cause well before their final lines (tables, shutdown)."""
    text = tail(log_file, 2000)
    run = text[text.rfind("\n=== ") + 1 :] if "\n=== " in text else text
    lines = run.splitlines()
    error_lines = [line[:500] for line in lines if _ERROR_LINE.search(line) and not line.startswith("=== ")][:errors]
    parts = [f"last lines of {log_file}:", *lines[-last:]]
    if error_lines:
        parts = ["errors in the log:", *error_lines, *parts]
    return "\n".join(parts)


def _message(headline: str, log_file: Path | None) -> str:
    if log_file is None:
        return headline
    return f"{headline}; {log_excerpt(log_file)}"
