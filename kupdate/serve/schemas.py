"""Request bodies. Unknown fields are refused (extra='forbid') and types are strict, so a typo or a
string where a number belongs gets a 400 naming the field instead of being silently ignored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kupdate.serve.errors import ApiError

MAX_TOKENS = 1024


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- OpenAI chat ---------------------------------------------------------------------------------
class TextPart(Body):
    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(Body):
    include_usage: bool = False


class ChatRequest(Body):
    """The fields of OpenAI's chat completion request kupdate understands. `temperature` and `top_p`
    are accepted for compatibility; answers are decoded greedily (see docs/serve.md)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: Literal[1] | None = None
    user: str | None = None
    stream_options: StreamOptions | None = None

    def question(self) -> str:
        """The last user message: what the knowledge base answers."""
        for message in reversed(self.messages):
            if message.role == "user":
                text = message.text()
                if not text.strip():
                    break
                return text
        raise ApiError("messages: no user message with text; the last user message is the question",
                       param="messages")

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# -- kupdate's own endpoints ---------------------------------------------------------------------
class AskRequest(Body):
    """`POST /v1/ask`: what `kupdate ask` takes."""

    question: str
    memory: bool = True
    adapter: bool = True
    as_of: str | None = None
    domain: str | None = None


class IngestRecord(Body):
    """One record, as a line of a JSONL file `kupdate ingest` reads."""

    text: str | None = None
    date: str | None = None
    domain: str | None = None
    source: str | None = None
    subject: str | None = None
    relation: str | None = None
    object: str | None = None


class IngestRequest(Body):
    """`POST /v1/ingest`: either `records` (JSONL records) or one `text` with its date, domain, source."""

    records: list[IngestRecord] | None = Field(default=None, min_length=1, max_length=10_000)
    text: str | None = None
    date: str | None = None
    domain: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> IngestRequest:
        if (self.records is None) == (self.text is None):
            raise ValueError("send either 'records' (a list of JSONL records) or 'text', not both or neither")
        if self.records is not None and any(v is not None for v in (self.date, self.domain, self.source)):
            raise ValueError("'date', 'domain' and 'source' go with 'text'; put them in each record instead")
        return self

    def as_records(self) -> list[IngestRecord]:
        if self.records is not None:
            return self.records
        return [IngestRecord(text=self.text, date=self.date, domain=self.domain, source=self.source)]
