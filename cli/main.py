"""`kupdate`: keep a language model's knowledge current.

Heavy libraries (torch, transformers, faiss) are imported inside commands, so `--help` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kupdate.cli.output import emit_json, short, stderr_is_tty, warn

app = typer.Typer(
    name="kupdate",
    help="Keep a language model's knowledge current: ingest documents into a gated memory, ask, "
    "and get fresh answers with their sources.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

KbOpt = Annotated[
    Path | None,
    typer.Option("--kb", help="Knowledge base folder (default: $KUPDATE_KB, else ~/.local/share/kupdate/kb).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
AsOfOpt = Annotated[
    str | None, typer.Option("--as-of", help="Date (YYYY-MM-DD): answer from the memory as it was then.")
]
DomainOpt = Annotated[str | None, typer.Option("--domain", help="Restrict to one domain.")]
EngineOpt = Annotated[
    str | None,
    typer.Option("--engine", help="'local' (this process) or 'ray' (a Ray cluster, see [compute] in "
                 "kupdate.toml; pip install 'kupdate[ray]'). Default: [compute] engine, else local.",
                 show_default=False),
]


@app.command()
def init(
    kb: KbOpt = None,
    model: Annotated[str | None, typer.Option(help="LLM: HF id or local folder (default: SmolLM2-135M-Instruct).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder: HF id or local folder (default: all-MiniLM-L6-v2).")] = None,
    device: Annotated[str | None, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = None,
    exemplars: Annotated[Path | None, typer.Option(help="JSONL of {\"question\": ...} the memory must not touch (default: the shipped set).")] = None,
    backend: Annotated[str | None, typer.Option(help="Memory backend: 'faiss' (default) or 'milvus'.")] = None,
    milvus_uri: Annotated[str | None, typer.Option(help="With --backend milvus: a milvus-lite file or a server URL (http://host:19530).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a knowledge base: config, memory, exemplars with the base model's answers.

    Example:

        kupdate init --kb ./my-kb
        kupdate init --kb ./big-kb --backend milvus --milvus-uri http://milvus:19530
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.init(kb, model=model, embedder=embedder, device=device, exemplars=exemplars,
                            backend=backend, uri=milvus_uri,
                            progress=stderr_is_tty()) as k:
        status = k.status()
    if json_:
        emit_json(status.to_dict())
    else:
        typer.echo(f"Created knowledge base at {status.kb} (model {status.model}, embedder {status.embedder}, "
                   f"{status.exemplars} exemplars).")


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or globs (.txt, .md, .jsonl).")],
    kb: KbOpt = None,
    domain: Annotated[str | None, typer.Option(help="Domain for these records (default: front matter, else 'default').")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date the facts hold from (default: front matter `date:`, else now).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unusable files (listed in the summary) instead of stopping.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Retire what was ingested from files under these folders that no longer exist (kept in history).")] = False,
    engine: EngineOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Chunk, embed and remember documents. Re-ingesting the same files adds nothing; a changed
    file replaces its old chunks, which stay in `kupdate history` as outdated.

    Example:

        kupdate ingest docs/ notes/*.md --domain orgs --prune
        kupdate ingest big-corpus/ --engine ray     # load, chunk and embed on a Ray cluster
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        report = k.ingest(paths, domain=domain, as_of=as_of, skip_bad=skip_bad, prune=prune,
                          progress=stderr_is_tty(), engine=engine)
    if json_:
        emit_json(report.to_dict())
        return
    typer.echo(report.summary())
    for s in report.skipped:
        warn(f"skipped {s['path']}: {s['reason']}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question (or a sentence to complete).")],
    kb: KbOpt = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Force the gate shut: no memory in the prompt.")] = False,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Use no domain adapter (with --no-memory: the base model's answer).")] = False,
    as_of: AsOfOpt = None,
    domain: DomainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Answer a question; memory is used only when the gate finds it relevant.

    The domain adapter the question routes to is active unless --no-adapter.

    Example:

        kupdate ask "Who is the CEO of Brindlemoor Robotics?" --json
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        answer = k.ask(question, memory=not no_memory, adapter=not no_adapter, as_of=as_of, domain=domain)
    if json_:
        emit_json(answer.to_dict())
        return
    typer.echo(answer.answer)
    g = answer.gate
    typer.echo(f"\n[gate {'open' if g.open else 'shut'}: score {g.score:.2f}, threshold {g.threshold:.2f}]",
               err=True)
    if answer.adapter:
        typer.echo(f"[adapter: {answer.adapter}]", err=True)
    for i, m in enumerate(answer.memories, 1):
        tag = "OUTDATED " if m.outdated else ""
        typer.echo(f"[{i}] {tag}{m.record.valid_from[:10]} {m.record.source}: {short(m.record.text, 80)}",
                   err=True)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: KbOpt = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many results.", min=1)] = 5,
    as_of: AsOfOpt = None,
    domain: DomainOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the memories closest to a query, with relevance scores and outdated ones flagged.

    Example:

        kupdate search "Morrowgate headquarters" -k 3
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as kbase:
        found = kbase.search(query, k=k, domain=domain, as_of=as_of)
    if json_:
        emit_json([m.to_dict() for m in found])
        return
    for m in found:
        tag = " OUTDATED" if m.outdated else ""
        typer.echo(f"{m.score:.3f} #{m.id} {m.record.valid_from[:10]}{tag} {m.record.source}\n    {short(m.record.text)}")


@app.command()
def status(kb: KbOpt = None, json_: JsonOpt = False) -> None:
    """Show what a knowledge base holds: models, record counts, domains, gate calibration.

    Example:

        kupdate status --json
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        s = k.status()
    if json_:
        emit_json(s.to_dict())
        return
    typer.echo(s.to_text())


def _register_command_groups() -> None:
    from kupdate.cli import adapters, jupyter, memory, serve

    memory.register(app)
    adapters.register(app)
    jupyter.register(app)
    serve.register(app)


_register_command_groups()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 a kupdate error (one `Error:` line), 2 usage."""
    from kupdate.errors import USER_ERRORS

    try:
        app(args=argv, prog_name="kupdate")  # standalone mode: usage errors exit 2 by themselves
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except USER_ERRORS as exc:
        typer.echo(f"Error: {exc}", err=True)
        return 1
    return 0


def main() -> None:
    """Console entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
