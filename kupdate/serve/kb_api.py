"""kupdate's own endpoints: each returns what the matching `kupdate ... --json` command prints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from kupdate.serve.errors import ApiError
from kupdate.serve.ingest import ingest_records
from kupdate.serve.jobs import answer_on, run_on
from kupdate.serve.responses import KJSONResponse
from kupdate.serve.schemas import AskRequest, IngestRequest

router = APIRouter(default_response_class=KJSONResponse)

QueryText = Annotated[str, Query(max_length=2000, description="What to look for.")]


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    """Up and the models loaded (the server accepts requests only once they are)."""
    state = request.app.state
    return {"status": "ok", "model": state.settings.model_name, "waiting": state.answers.waiting,
            "ingest_waiting": state.ingests.waiting}


@router.post("/v1/ask")
async def ask(body: AskRequest, request: Request) -> dict[str, Any]:
    """The `kupdate ask --json` object."""
    options = body.model_dump(exclude={"question"})
    answer = await answer_on(request.app.state.answers, body.question, **options)
    return {k: v for k, v in answer.items() if not k.startswith("_")}


@router.get("/v1/search")
async def search(request: Request, q: QueryText, k: Annotated[int, Query(ge=1, le=100)] = 5,
                 domain: str | None = None, as_of: str | None = None) -> list[dict[str, Any]]:
    """The `kupdate search --json` list."""
    _not_blank(q)
    found = await run_on(request.app.state.answers,
                         lambda kb: [m.to_dict() for m in kb.search(q, k=k, domain=domain, as_of=as_of)])
    return found


@router.get("/v1/history")
async def history(request: Request, q: QueryText) -> list[dict[str, Any]]:
    """The `kupdate history --json` list."""
    _not_blank(q)
    return await run_on(request.app.state.answers, lambda kb: [g.to_dict() for g in kb.history(q)])


@router.post("/v1/ingest")
async def ingest(body: IngestRequest, request: Request) -> dict[str, Any]:
    """The `kupdate ingest --json` report. Answered once the records are stored and the gate
    recalibrated: from then on they are searchable."""
    records = body.as_records()
    return await run_on(request.app.state.ingests, lambda kb: ingest_records(kb, records))


@router.get("/v1/status")
async def status(request: Request) -> dict[str, Any]:
    """The `kupdate status --json` object."""
    return await run_on(request.app.state.answers, lambda kb: kb.status().to_dict())


def _not_blank(q: str) -> None:
    if not q.strip():
        raise ApiError("q: the query is empty; pass what to look for, e.g. ?q=headquarters", param="q")
