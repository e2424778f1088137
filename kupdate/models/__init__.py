"""Model loading: the embedder that indexes memory and the LLM that answers.

Importing this package is cheap: torch, transformers and sentence-transformers are imported
only when a model is actually loaded.
"""

from kupdate.models.device import pick_device, pick_dtype
from kupdate.models.embedder import (
    DEFAULT_EMBEDDER,
    Embedder,
    HashingEmbedder,
    SentenceEmbedder,
    load_embedder,
)
from kupdate.models.llm import DEFAULT_MODEL, LLM, load_llm

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_MODEL",
    "LLM",
    "Embedder",
    "HashingEmbedder",
    "SentenceEmbedder",
    "load_embedder",
    "load_llm",
    "pick_device",
    "pick_dtype",
]
