"""Printing: data on stdout (JSON with --json), progress and errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def warn(message: str) -> None:
    typer.echo(message, err=True)


def short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
