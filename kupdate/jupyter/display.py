"""How answers, search results and ingest summaries look in Jupyter (HTML) and in a terminal (text).

Everything a user ingested is data, never markup: every string that comes from a question, an
answer or a memory goes through `html.escape` before it reaches the page. This module imports
nothing heavy, so `Answer.__str__` and `_repr_html_` can use it without a Jupyter install.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

_BOX = "font-family: var(--jp-ui-font-family, sans-serif); line-height: 1.4; max-width: 60em"
_TABLE = "border-collapse: collapse; margin-top: 0.4em; font-size: 0.92em"
_CELL = "padding: 2px 8px; text-align: left; vertical-align: top; border-bottom: 1px solid #ddd"
_OPEN = "background: #d4f4dd; color: #0b5d1e"
_SHUT = "background: #eee; color: #555"
_OUTDATED_LABEL = "background: #fde2e1; color: #9b1c1c; font-size: 0.8em; padding: 0 4px; border-radius: 3px"


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is also safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def date_of(memory: Any) -> str:
    """The day a memory's fact holds from (`valid_from` is an ISO timestamp)."""
    return (memory.record.valid_from or "")[:10] or "-"


def source_name(source: str | None) -> str:
    """A source's file name (the full path goes in a tooltip); line suffixes like `a.jsonl:3` stay."""
    return PurePath(source).name if source else "-"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- plain text ----------------------------------------------------------------------------------
def superseded_by(m: Any, rows: dict[int, int]) -> str:
    """What replaced an outdated memory: its row (`[1]`) when listed alongside, else its record id."""
    if not m.outdated or m.outdated_by is None:
        return ""
    return f"[{rows[m.outdated_by]}]" if m.outdated_by in rows else f"record #{m.outdated_by}"


def _rows(memories: list[Any]) -> dict[int, int]:
    return {m.id: i for i, m in enumerate(memories, 1)}


def memory_line(i: int, m: Any, rows: dict[int, int] | None = None, width: int = 90) -> str:
    """`[1] 2025-02-10 brindlemoor-2025.md: Brindlemoor Robotics ...` (outdated ones say so)."""
    tag = "OUTDATED " if m.outdated else ""
    by = superseded_by(m, rows or {})
    by = f" (superseded by {by})" if by else ""
    return f"[{i}] {tag}{date_of(m)} {source_name(m.record.source)}: {_one_line(m.record.text, width)}{by}"


def answer_text(answer: Any) -> str:
    """The answer, the gate's decision, then the memories it was given, one per line."""
    g = answer.gate
    lines = [answer.answer, "",
             f"[gate {'open' if g.open else 'shut'}: score {g.score:.2f}, threshold {g.threshold:.2f}; {g.reason}]"]
    if answer.adapter:
        lines.append(f"[adapter {answer.adapter}]")
    rows = _rows(answer.memories)
    lines += [memory_line(i, m, rows) for i, m in enumerate(answer.memories, 1)]
    return "\n".join(lines)


def search_text(memories: Iterable[Any]) -> str:
    rows = [f"{m.score:.3f} #{m.id} {date_of(m)}{' OUTDATED' if m.outdated else ''} "
            f"{source_name(m.record.source)}\n    {_one_line(m.record.text, 100)}" for m in memories]
    return "\n".join(rows) or "(no memories found)"


def ingest_text(report: Any) -> str:
    """The summary line `kupdate ingest` prints, plus one line per skipped file."""
    return "\n".join([report.summary(), *(f"skipped {s['path']}: {s['reason']}" for s in report.skipped)])


def status_text(s: Any) -> str:
    return s.to_text()


def consolidation_text(run: Any) -> str:
    """What a consolidation did: one line per domain trained, then one per domain skipped."""
    return run.to_text()


# -- HTML ----------------------------------------------------------------------------------------
def gate_badge(gate: Any) -> str:
    state, style = ("open", _OPEN) if gate.open else ("shut", _SHUT)
    return (f'<span class="kupdate-gate kupdate-gate-{state}" style="{style}; padding: 0 6px; '
            f'border-radius: 3px">gate {state}</span> score {gate.score:.2f} / threshold '
            f"{gate.threshold:.2f} <span style=\"color: #666\">({esc(gate.reason)})</span>")


def memories_table(memories: list[Any], *, scores: bool = False) -> str:
    """One row per memory: number, date, source, text; outdated ones struck through and labelled."""
    if not memories:
        return ""
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in
                   ["#", "date", "source", "memory", *(["score"] if scores else [])])
    rows, numbers = [], _rows(memories)
    for i, m in enumerate(memories, 1):
        text = esc(m.record.text)
        if m.outdated:
            by = superseded_by(m, numbers)
            text = (f'<s>{text}</s> <span class="kupdate-outdated" style="{_OUTDATED_LABEL}">'
                    f"outdated{esc(' by ' + by if by else '')}</span>")
        cells = [str(i), esc(date_of(m)),
                 f'<span title="{esc(m.record.source)}">{esc(source_name(m.record.source))}</span>', text]
        if scores:
            cells.append(f"{m.score:.3f}")
        style = ' style="color: #888"' if m.outdated else ""
        cls = "kupdate-memory kupdate-memory-outdated" if m.outdated else "kupdate-memory"
        rows.append(f'<tr class="{cls}" data-id="{m.id}"{style}>'
                    + "".join(f'<td style="{_CELL}">{c}</td>' for c in cells) + "</tr>")
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def answer_html(answer: Any) -> str:
    """The question, the answer, the gate's decision and the cited memories with dates and sources."""
    parts = [f'<div class="kupdate-answer" style="{_BOX}">',
             f'<div style="color: #666">Q: {esc(answer.question)}</div>',
             f'<div style="font-size: 1.15em; margin: 0.2em 0"><b>{esc(answer.answer)}</b></div>',
             f"<div>{gate_badge(answer.gate)}"]
    if answer.adapter:
        parts.append(f" · adapter <code>{esc(answer.adapter)}</code>")
    if "total" in answer.timings_ms:
        parts.append(f' <span style="color: #666">· {answer.timings_ms["total"]:.0f} ms</span>')
    parts.append("</div>")
    parts.append(memories_table(answer.memories))
    parts.append("</div>")
    return "".join(parts)


def search_html(memories: list[Any], query: str | None = None) -> str:
    title = f'<div style="color: #666">Search: {esc(query)}</div>' if query else ""
    body = memories_table(memories, scores=True) or "<i>no memories found</i>"
    return f'<div class="kupdate-search" style="{_BOX}">{title}{body}</div>'


class SearchResults(list):
    """`KnowledgeBase.search` results that render as a table in Jupyter and as text elsewhere.

        SearchResults(kb.search("Brindlemoor CEO"), query="Brindlemoor CEO")
    """

    def __init__(self, memories: Iterable[Any] = (), query: str | None = None) -> None:
        super().__init__(memories)
        self.query = query

    def _repr_html_(self) -> str:
        return search_html(list(self), self.query)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(search_text(self))

    def __str__(self) -> str:
        return search_text(self)


class Table:
    """A small table of any values: escaped HTML in Jupyter, aligned text elsewhere.

        Table(["question", "answer"], [[a.question, a.answer] for a in answers])
    """

    def __init__(self, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
        self.header = list(header)
        self.rows = [[_one_line("-" if v is None else str(v), 10_000) for v in row] for row in rows]

    def _repr_html_(self) -> str:
        head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in self.header)
        body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{esc(v)}</td>' for v in row) + "</tr>"
                       for row in self.rows)
        return f'<table class="kupdate-table" style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __str__(self) -> str:
        cells = [[_one_line(v, 50) for v in row] for row in [self.header, *self.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.header))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))
