"""kupdate: keep a language model's knowledge current without retraining it.

    from kupdate import KnowledgeBase
    kb = KnowledgeBase.open("my-kb")
    print(kb.ask("Who leads Acme Rail?").answer)

In IPython or Jupyter, `%load_ext kupdate` adds the `%kupdate` and `%%ask` magics.
Names are imported lazily so `import kupdate` (and `kupdate --help`) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["KnowledgeBase", "Answer", "Memory", "IngestReport", "Config"]

_LAZY = {
    "KnowledgeBase": "kupdate.kb",
    "Answer": "kupdate.answering.answer",
    "Memory": "kupdate.answering.retrieval",
    "IngestReport": "kupdate.ingest.pipeline",
    "Config": "kupdate.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kupdate' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext kupdate`: register the `%kupdate` line magic and the `%%ask` cell magic."""
    from kupdate.jupyter.magics import load

    load(ipython)
