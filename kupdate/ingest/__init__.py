"""Ingest: turn files into documents and documents into sentence-aware chunks.

`loaders` finds and parses files (.txt, .md with front matter, .jsonl), `chunking` splits text
into token-bounded chunks, `dates` normalises dates so they sort in time order. The pipeline that
embeds and stores the chunks lives in `kupdate.ingest.pipeline`; it is not imported here so that
reading files never pulls in the model stack.
"""

from kupdate.ingest.chunking import chunk_text, count_tokens_default, split_sentences
from kupdate.ingest.dates import now_iso, parse_date
from kupdate.ingest.loaders import SUPPORTED, Document, expand_paths, load_file

__all__ = [
    "SUPPORTED",
    "Document",
    "chunk_text",
    "count_tokens_default",
    "expand_paths",
    "load_file",
    "now_iso",
    "parse_date",
    "split_sentences",
]
