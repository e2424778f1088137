"""Memory commands beyond the core ones: `reindex`, `forget`, `history`, `exemplars add|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kupdate.cli.output import emit_json, short, stderr_is_tty, warn

# Same as in main.py; not imported from there because main imports this module while loading.
KbOpt = Annotated[
    Path | None,
    typer.Option("--kb", help="Knowledge base folder (default: $KUPDATE_KB, else ~/.local/share/kupdate/kb).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def reindex(
    kb: KbOpt = None,
    embedder: Annotated[str | None, typer.Option(
        help="Embedder to switch to: 'hashing', an HF id or a local folder (default: the configured one).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Re-embed every memory (and exemplar) with an embedder, rebuild the index, recalibrate the gate.

    Switching embedder updates kupdate.toml. An interrupted reindex changes nothing.

    Example:

        kupdate reindex --embedder all-minilm-l6-v2
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        report = k.reindex(embedder, progress=stderr_is_tty())
    if json_:
        emit_json(report.to_dict())
        return
    was = "" if report.embedder == report.embedder_before else f", was {report.embedder_before} ({report.dim_before} dims)"
    typer.echo(f"Re-embedded {report.records} records with {report.embedder} ({report.dim} dims{was}) "
               f"in {report.seconds:.1f} s; gate threshold {report.gate['threshold']:.3f}")


def forget(
    kb: KbOpt = None,
    source: Annotated[Path | None, typer.Option("--source", help="Forget every record (all versions) from this file, or from files under this folder.")] = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Forget the record with this id (repeatable; ids are in `search --json`).")] = None,
    query: Annotated[str | None, typer.Option("--query", help="Forget the memories whose gate score for this text reaches the threshold.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Remove records for real: from the records, the full-text index and the dense index.

    Give exactly one of --source, --id, --query. Adapters trained on a removed record are
    flagged as needing a rebuild; the gate is recalibrated. Superseded versions are history,
    not removed, unless selected too.

    Example:

        kupdate forget --source notes/leaked.md --dry-run
    """
    from kupdate import KnowledgeBase

    if sum(x is not None and x != [] for x in (source, ids, query)) != 1:
        raise typer.BadParameter("give exactly one of --source, --id or --query")
    with KnowledgeBase.open(kb) as k:
        report = k.forget(source=source, ids=ids, query=query, dry_run=dry_run)
    if json_:
        emit_json(report.to_dict())
        return
    verb = "Would remove" if dry_run else "Removed"
    typer.echo(f"{verb} {len(report.records)} records.")
    for r in report.records:
        typer.echo(f"  #{r['id']} {r['kind']} {r['valid_from'][:10]} {r['source']}: {short(r['text'], 80)}")
    if report.not_found:
        warn(f"no records with ids {report.not_found}")
    for domain, versions in report.adapters_needing_rebuild.items():
        warn(f"adapters of domain {domain!r} trained on removed records need a rebuild: {', '.join(versions)}")


def history(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: KbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show every version of the matching facts, current and outdated, newest first.

    Structured facts are grouped by subject and relation.

    Example:

        kupdate history "Orla Institute vessel" --json
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        groups = k.history(query)
    if json_:
        emit_json([g.to_dict() for g in groups])
        return
    if not groups:
        typer.echo("No matching memories.")
    for g in groups:
        typer.echo(f"{g.subject} / {g.relation}" if g.subject is not None else "free text")
        for v in g.versions:
            until = f" until {v.valid_to[:10]}" if v.valid_to else ""
            by = f" by #{v.superseded_by}" if v.superseded_by is not None else ""
            typer.echo(f"  #{v.id} {v.valid_from[:10]} {v.status}{until}{by} {v.source}\n      {short(v.text)}")


exemplars_app = typer.Typer(help="Exemplar questions: what the memory must not change (they calibrate the gate).",
                            no_args_is_help=True)


@exemplars_app.command("add")
def exemplars_add(
    file: Annotated[Path, typer.Argument(help='JSONL, one {"question": ..., "domain"?: ...} per line.')],
    kb: KbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add exemplar questions with the base model's answers, then recalibrate the gate.

    Questions already stored are skipped.

    Example:

        kupdate exemplars add more-exemplars.jsonl
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        report = k.import_exemplars(file, progress=stderr_is_tty())
    if json_:
        emit_json(report.to_dict())
        return
    typer.echo(f"{report.added} exemplars added, {report.duplicates} already present ({report.total} in all).")


@exemplars_app.command("list")
def exemplars_list(kb: KbOpt = None, json_: JsonOpt = False) -> None:
    """List the exemplar questions with the base model's recorded answers.

    Example:

        kupdate exemplars list --json
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        records = k.exemplars()
    if json_:
        emit_json([{"id": r.id, "question": r.text, "domain": r.domain, "source": r.source,
                    "base_answer": r.meta.get("base_answer")} for r in records])
        return
    for r in records:
        typer.echo(f"#{r.id} [{r.domain}] {r.text}\n    -> {short(str(r.meta.get('base_answer', '')), 80)}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(reindex)
    app.command()(forget)
    app.command()(history)
    app.add_typer(exemplars_app, name="exemplars")
