"""`kupdate serve`: the knowledge base behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kupdate.cli.output import warn

# Same as in main.py; not imported from there because main imports this module while loading.
KbOpt = Annotated[
    Path | None,
    typer.Option("--kb", help="Knowledge base folder (default: $KUPDATE_KB, else ~/.local/share/kupdate/kb).",
                 show_default=False),
]


def serve(
    kb: KbOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback requires an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        "--api-key-env", help="Environment variable holding the API key clients must send as "
        "'Authorization: Bearer <key>' (default: KUPDATE_API_KEY, used when set). The key is never written "
        "to disk.", show_default=False)] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted (413 above).")] = 2.0,
    queue_size: Annotated[int, typer.Option(help="Requests waiting for the model before new ones get 503 "
                                            "with Retry-After.", min=1)] = 32,
    max_batch: Annotated[int, typer.Option(help="Questions answered together in one model pass (1: one at "
                                           "a time).", min=1)] = 8,
    batch_window_ms: Annotated[float, typer.Option(help="How long a lone question waits for others to join "
                                                   "its batch.", min=0, max=1000)] = 50.0,
    ingest_threads: Annotated[int, typer.Option(help="CPU threads the ingest worker's models use (1 leaves the "
                                                "other cores to answering).", min=1)] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level ('info' also logs each request).")] = "warning",
) -> None:
    """Serve a knowledge base over an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    Endpoints: POST /v1/chat/completions (the last user message is the question; stream: true
    for server-sent events), GET /v1/models, and kupdate's own POST /v1/ask, GET /v1/search?q=,
    GET /v1/history?q=, POST /v1/ingest, GET /v1/status, GET /healthz. Chat responses carry the
    gate decision and the cited memories in an extra `kupdate` field. Needs the `serve` extra.

    Example:

        kupdate serve --kb ./my-kb --port 8000
        curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "my-kb", "messages": [{"role": "user", "content": "Who leads X?"}]}'
        KUPDATE_API_KEY=$(openssl rand -hex 24) kupdate serve --kb ./my-kb --host 0.0.0.0
    """
    try:
        from kupdate.serve import ServeSettings, run_server
        from kupdate.serve.app import create_app  # noqa: F401  (fails early without fastapi)
    except ImportError as exc:
        from kupdate.errors import ConfigError

        raise ConfigError(f"kupdate serve needs FastAPI and uvicorn ({exc}); pip install 'kupdate[serve]'") from None

    settings = ServeSettings.build(kb, host=host, port=port, api_key_env=api_key_env, max_body_mb=max_body_mb,
                                   queue_size=queue_size, log_level=log_level, max_batch=max_batch,
                                   batch_window_ms=batch_window_ms, ingest_threads=ingest_threads)

    def ready(s: ServeSettings) -> None:
        where = f"http://{s.host}:{s.port}" if ":" not in s.host else f"http://[{s.host}]:{s.port}"
        key = ", API key required" if s.api_key else ""
        warn(f"Serving {s.kb} as model {s.model_name!r} at {where}/v1{key} (Ctrl-C to stop)")

    warn(f"Loading {settings.kb} ...")
    run_server(settings, on_ready=ready)


def register(app: typer.Typer) -> None:
    app.command()(serve)
