"""`kupdate serve`: the knowledge base behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    from kupdate.serve import ServeSettings, create_app, run_server
    run_server(ServeSettings.build(kb="my-kb"))          # what `kupdate serve --kb my-kb` does

Any OpenAI client pointed at `http://127.0.0.1:8000/v1` gets answers with the KB's gated memory
and serving adapters; the citations and the gate decision travel in an extra `kupdate` field.
FastAPI and uvicorn are imported only here (the `serve` extra), never by `kupdate --help`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app", "run_server"]

_LAZY = {"ServeSettings": "kupdate.serve.settings", "create_app": "kupdate.serve.app",
         "run_server": "kupdate.serve.app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kupdate.serve' has no attribute {name!r}")
