"""Request size limit: a body over `max_bytes` gets a 413 before it is read into memory."""

from __future__ import annotations

from typing import Any

from kupdate.serve.errors import error_body
from kupdate.serve.responses import dumps


class BodyTooLarge(Exception):
    """Raised while reading a body (sent without Content-Length) once it passes the limit."""


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes`, by their Content-Length or as they arrive."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        mb = self.max_bytes / 1e6
        body = dumps(error_body(413, f"the request body is larger than the server's limit of {mb:g} MB; "
                                     "send less per request (ingest in several requests)",
                                code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
