"""Benchmarks of stale versus fresh knowledge: datasets, update streams, the protocol, reports.

    from kupdate.bench import load_counterfact, synthetic_stream, run_stream
    result = run_stream(kb, synthetic_stream(60, rounds=3), ["base", "gated_rag"], workdir="out")
    print(result.to_markdown())

Modules: `datasets` (EditCase, file loaders), `synthetic` (the seeded update stream), `stream`
(rounds), `modes` (how each mode answers), `protocol` (rounds, checkpoint, scoring), `scoring`,
`checkpoint`, `teacher` (teacher-forced accuracy), `report` (table, plots).
"""

from kupdate.bench.checkpoint import Checkpoint
from kupdate.bench.datasets import LOADERS, EditCase, load_counterfact, load_qaedit, load_zsre
from kupdate.bench.modes import ADAPTER_MODES, DEFAULT_MODES, MODES, rag_answer
from kupdate.bench.protocol import EvalResult, StreamResult, evaluate, run_stream
from kupdate.bench.report import plot, plot_curve, table
from kupdate.bench.stream import Round, Stream, stream_from_cases
from kupdate.bench.synthetic import synthetic_stream

__all__ = [
    "ADAPTER_MODES", "DEFAULT_MODES", "LOADERS", "MODES", "Checkpoint", "EditCase", "EvalResult", "Round",
    "Stream", "StreamResult", "evaluate", "load_counterfact", "load_qaedit", "load_zsre", "plot", "plot_curve",
    "rag_answer", "run_stream", "stream_from_cases", "synthetic_stream", "table",
]
