"""The answer path: a question in, an answer with its citations out (docs/answering.md).

Imports run one way, top to bottom: `answer` -> `compose`, `current` -> `freshness` -> `decoding`
-> `prompt` -> `notes` -> `retrieval` -> `gate` -> `query` -> `kupdate.language`. Nothing here imports `kupdate.kb`: the
knowledge base is handed in.
"""

from kupdate.answering.answer import Answer, ask, ask_batch
from kupdate.answering.freshness import Reading
from kupdate.answering.notes import Note
from kupdate.answering.retrieval import Memory, retrieve, taken_out

__all__ = ["Answer", "Memory", "Note", "Reading", "ask", "ask_batch", "retrieve", "taken_out"]
