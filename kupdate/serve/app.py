"""The FastAPI application: routes, error shape, size limit, API key, and the KB worker threads."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request

from kupdate.serve import errors
from kupdate.serve.errors import ApiError
from kupdate.serve.limits import BodyLimit
from kupdate.serve.settings import ServeSettings
from kupdate.serve.workers import KBWorker, warm_models

OPEN_PATHS = frozenset({"/healthz"})


def create_app(settings: ServeSettings, *, on_ready: Callable[[ServeSettings], None] | None = None) -> FastAPI:
    """The app serving `settings.kb`. Models load before it accepts requests; `on_ready` is called then."""
    from kupdate.serve import kb_api, openai_api

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        answers = KBWorker("answer", settings.kb, queue_size=settings.queue_size, warm=warm_models,
                           max_batch=settings.max_batch, window_s=settings.batch_window_ms / 1000)
        ingests = KBWorker("ingest", settings.kb, queue_size=max(1, settings.queue_size // 4),
                           threads=settings.ingest_threads)
        app.state.answers, app.state.ingests = answers, ingests
        try:
            await asyncio.wrap_future(answers.start())
            await asyncio.wrap_future(ingests.start())
            app.state.info = await asyncio.wrap_future(answers.submit(_info))
        except BaseException as exc:
            app.state.startup_error = exc
            answers.stop()
            ingests.stop()
            raise
        if on_ready is not None:
            on_ready(settings)
        try:
            yield
        finally:
            ingests.stop()
            answers.stop()

    app = FastAPI(title="kupdate", summary="OpenAI-compatible API over a kupdate knowledge base",
                  lifespan=lifespan, dependencies=[Depends(_require_key)], docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.startup_error = None
    errors.install(app, settings.retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(openai_api.router)
    app.include_router(kb_api.router)
    return app


def _info(kb: Any) -> dict[str, Any]:
    config = kb.path / "kupdate.toml"
    return {"model": kb.config.model, "embedder": kb.config.embedder, "created": int(config.stat().st_mtime)}


async def _require_key(request: Request) -> None:
    """With an API key configured, every endpoint but /healthz wants `Authorization: Bearer <key>`."""
    key = request.app.state.settings.api_key
    if key is None or request.url.path in OPEN_PATHS:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        what = "missing" if not given else "invalid"
        raise ApiError(f"{what} API key: send the header 'Authorization: Bearer <key>' with the key the "
                       "server was started with", status=401, code="invalid_api_key")


def run_server(settings: ServeSettings, *, on_ready: Callable[[ServeSettings], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM). A KB that cannot be opened, or models that
    cannot be loaded, raise their `KupdateError` here rather than inside the server."""
    import uvicorn

    from kupdate import KnowledgeBase

    KnowledgeBase.open(settings.kb).close()  # a missing KB fails now, with its own message
    app = create_app(settings, on_ready=on_ready)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                    access_log=settings.log_level in ("info", "debug"), timeout_graceful_shutdown=10)
    except SystemExit:
        if app.state.startup_error is not None:
            raise app.state.startup_error from None
        raise
    if app.state.startup_error is not None:
        raise app.state.startup_error
