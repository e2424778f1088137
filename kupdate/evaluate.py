"""Stale-vs-fresh evaluation: kept importable for notebooks and scripts; it lives in `kupdate.bench`."""

from kupdate.bench import (  # noqa: F401  (re-exported)
    DEFAULT_MODES,
    EditCase,
    EvalResult,
    evaluate,
    load_counterfact,
    load_qaedit,
    load_zsre,
    plot,
    rag_answer,
)

MODES = DEFAULT_MODES
