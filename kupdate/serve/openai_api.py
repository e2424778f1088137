"""The OpenAI-compatible endpoints: `POST /v1/chat/completions` (plain and streamed) and `GET /v1/models`."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from kupdate.serve.errors import ApiError
from kupdate.serve.jobs import answer_on, citations
from kupdate.serve.responses import KJSONResponse, dumps
from kupdate.serve.schemas import ChatRequest

router = APIRouter(prefix="/v1", default_response_class=KJSONResponse)


def model_card(request: Request) -> dict[str, Any]:
    s = request.app.state.settings
    info = request.app.state.info
    return {"id": s.model_name, "object": "model", "created": info["created"], "owned_by": "kupdate",
            "kupdate": {"kb": str(s.kb), "base_model": info["model"], "embedder": info["embedder"]}}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(request)]}


@router.get("/models/{model}")
async def get_model(model: str, request: Request) -> dict[str, Any]:
    check_model(request, model)
    return model_card(request)


def check_model(request: Request, model: str) -> None:
    name = request.app.state.settings.model_name
    if model != name:
        raise ApiError(f"model {model!r} is not served here; this server serves {name!r} (GET /v1/models)",
                       status=404, code="model_not_found", param="model")


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    check_model(request, body.model)
    question = body.question()
    answer = await answer_on(request.app.state.answers, question, max_tokens=body.token_limit())
    finish = "length" if answer["_tokens"] >= answer["_limit"] else "stop"
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        return StreamingResponse(_events(head, answer, finish), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["answer"]},
                         "finish_reason": finish, "logprobs": None}],
            "usage": None, "kupdate": citations(answer)}


def _events(head: dict[str, Any], answer: dict[str, Any], finish: str) -> Iterator[str]:
    """Server-sent events as OpenAI streams them: a role chunk, content chunks, a final chunk with the
    finish reason (and the `kupdate` field), then `[DONE]`. The answer is complete before the first
    event: kupdate's decoding runs to the end, then the text goes out word by word."""
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        data = {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                **extra}
        return f"data: {dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for piece in re.findall(r"\s*\S+", answer["answer"]):
        yield chunk({"content": piece})
    yield chunk({}, finish, kupdate=citations(answer))
    yield "data: [DONE]\n\n"
