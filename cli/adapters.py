"""Consolidation commands: `consolidate`, `schedule`, `adapters list|show|rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kupdate.cli.output import emit_json, stderr_is_tty, warn
from kupdate.consolidate.run import metric_value

# Same as in main.py; not imported from there because main imports this module while loading.
KbOpt = Annotated[
    Path | None,
    typer.Option("--kb", help="Knowledge base folder (default: $KUPDATE_KB, else ~/.local/share/kupdate/kb).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DomainOpt = Annotated[str | None, typer.Option("--domain", help="Only this domain (default: every domain).")]
EngineOpt = Annotated[
    str | None,
    typer.Option("--engine", help="'local' (one domain after the other here) or 'ray' (the domains train "
                 "at the same time on a Ray cluster). Default: [compute] engine, else local.",
                 show_default=False),
]

# Report metrics, in the order and words they are printed.
METRICS = {"fresh_recall": "no-memory recall", "paraphrase_recall": "paraphrase recall", "locality": "locality"}


def consolidate(
    kb: KbOpt = None,
    domain: DomainOpt = None,
    if_due: Annotated[bool, typer.Option("--if-due", help="Only domains the policy says are due "
                                         "([consolidation] min_new_records and min_interval).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Consolidate even when the policy says it is not due.")] = False,
    engine: EngineOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Distil the memory of each domain into a sparse LoRA adapter; promote it only if it is better.

    A candidate that does not beat the serving version, or changes unrelated answers, is kept as
    rejected with its report. Only one consolidation runs on a KB at a time.

    Example:

        kupdate consolidate --if-due
        kupdate consolidate --domain orgs --force --json
        kupdate consolidate --engine ray     # every due domain at once, one Ray worker (GPU) each
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        run = k.consolidate(domain=domain, if_due=if_due, force=force, progress=stderr_is_tty(), engine=engine)
    if json_:
        emit_json(run.to_dict())
        return
    for line in run_lines(run):
        typer.echo(line)


def schedule(
    every: Annotated[str, typer.Option("--every", help="Time between runs: '30m', '6h', '1d'.")] = "6h",
    kb: KbOpt = None,
    domain: DomainOpt = None,
    max_runs: Annotated[int | None, typer.Option("--max-runs", min=1, help="Stop after this many runs.")] = None,
    engine: EngineOpt = None,
) -> None:
    """Run `consolidate --if-due` now and at every interval, until Ctrl-C or SIGTERM.

    Runs in the foreground and logs each run on stderr as one line. Stopping during a run abandons that run's unfinished adapter (it is ignored; nothing serving
    changes). For a schedule without a process left running, use cron or a systemd timer with
    `kupdate consolidate --if-due` (see docs/consolidation.md).

    Example:

        kupdate schedule --every 6h --kb ./kb >> consolidate.log 2>&1
    """
    from kupdate.adapters import registry_for
    from kupdate.config import parse_duration
    from kupdate.schedule import run_schedule

    every_s = parse_duration(every, where="--every")
    if every_s <= 0:
        raise typer.BadParameter("--every must be longer than 0s, e.g. 6h")
    where = registry_for(kb).root.parent  # fail now, not at every tick, when there is no KB

    def tick() -> str:
        from kupdate import KnowledgeBase

        with KnowledgeBase.open(kb) as k:  # opened per run, so edits to kupdate.toml apply
            run = k.consolidate(domain=domain, if_due=True, engine=engine)
        return "; ".join(run_lines(run))

    warn(f"schedule: consolidating {where} every {every} (Ctrl-C to stop)")
    runs = run_schedule(every_s, tick, log=warn, max_runs=max_runs)
    warn(f"schedule stopped after {runs} run{'' if runs == 1 else 's'}")


adapters_app = typer.Typer(help="The per-domain adapters: list, inspect, roll back.", no_args_is_help=True)


@adapters_app.command("list")
def adapters_list(kb: KbOpt = None, json_: JsonOpt = False) -> None:
    """One row per domain: serving version, versions made, last attempt, serving metrics, and the
    versions trained on records since forgotten (`kupdate forget`), which the domain's next
    consolidation replaces.

    Example:

        kupdate adapters list --json
    """
    from kupdate.adapters import registry_for
    from kupdate.forget import needing_rebuild

    reg = registry_for(kb)
    rebuild = needing_rebuild(kb)
    rows = []
    for d in reg.domains():
        versions = reg.versions(d)
        serving = next((v for v in versions if v.serving), None)
        rows.append({"domain": d, "serving": serving.version if serving else None, "versions": len(versions),
                     "promoted": sum(v.status == "promoted" for v in versions),
                     "rejected": sum(v.status == "rejected" for v in versions),
                     "last_attempt_at": versions[-1].finished_at,
                     "metrics": _after(serving.report) if serving else {},
                     "needs_rebuild": rebuild.get(d, [])})
    if json_:
        emit_json(rows)
        return
    if not rows:
        typer.echo("No adapters yet; `kupdate consolidate` makes them.")
        return
    typer.echo(f"{'domain':<16} {'serving':<8} {'versions':<28} {'last attempt':<26} metrics (serving)")
    for r in rows:
        counts = f"{r['versions']} ({r['promoted']} promoted, {r['rejected']} rejected)"
        metrics = ", ".join(f"{METRICS.get(k, k)} {metric_value(v)}" for k, v in r["metrics"].items()) or "-"
        typer.echo(f"{r['domain']:<16} {r['serving'] or 'none':<8} {counts:<28} "
                   f"{r['last_attempt_at'] or '-':<26} {metrics}")
        if r["needs_rebuild"]:
            typer.echo(f"{'':<16} trained on forgotten records: {', '.join(r['needs_rebuild'])}; "
                       f"`kupdate consolidate --domain {r['domain']} --force` rebuilds it")


@adapters_app.command("show")
def adapters_show(
    domain: Annotated[str, typer.Argument(help="The domain.")],
    kb: KbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Every version of a domain's adapter: status, time, data, routing threshold, metrics before -> after, decision.

    Example:

        kupdate adapters show orgs
    """
    from kupdate.adapters import registry_for
    from kupdate.errors import KupdateError

    reg = registry_for(kb)
    versions = reg.versions(domain)
    if not versions:
        known = ", ".join(reg.domains()) or "none yet"
        raise KupdateError(f"domain {domain!r} has no adapter versions (domains with adapters: {known})")
    if json_:
        serving = next((v.version for v in versions if v.serving), None)
        emit_json({"domain": domain, "serving": serving, "versions": [v.to_dict() for v in versions]})
        return
    for v in versions:
        r = v.report
        secs = (r.get("seconds") or {}).get("total")
        took = f" ({secs:.0f} s)" if isinstance(secs, (int, float)) else ""
        typer.echo(f"{v.version} {v.status}{' [serving]' if v.serving else ''} {v.finished_at or '-'}{took}")
        data = r.get("data") or {}
        sizes = ", ".join(f"{k} {val}" for k, val in data.items() if isinstance(val, (int, float, str)))
        if sizes:
            typer.echo(f"    data: {sizes}")
        step = data.get("incremental")
        if isinstance(step, dict):
            typer.echo(f"    continued {step.get('from')}: {step.get('new_records')} new records, "
                       f"{step.get('examples')} examples trained ({step.get('rehearsed_examples')} rehearsed)")
        routing = r.get("routing")
        if isinstance(routing, dict):
            typer.echo(f"    routing: threshold {routing.get('threshold')} (best exemplar "
                       f"{routing.get('max_exemplar_score')} against {routing.get('keys')} keys)")
        metrics = _metrics(r, every=True)
        if metrics:
            typer.echo(f"    {metrics}")
        reason = (r.get("decision") or {}).get("reason")
        if reason:
            typer.echo(f"    decision: {reason}")


@adapters_app.command("rollback")
def adapters_rollback(
    domain: Annotated[str, typer.Argument(help="The domain.")],
    version: Annotated[str | None, typer.Argument(help="A promoted version to serve (e.g. v0002); "
                                                  "default: the one that served before.")] = None,
    kb: KbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve an earlier adapter version of a domain, or none (the memory still answers).

    Without VERSION, goes back to the version that served before the current one; when there is
    none, the domain serves no adapter. Run it again to go further back.

    Example:

        kupdate adapters rollback orgs
        kupdate adapters rollback orgs v0002
    """
    from kupdate import KnowledgeBase

    with KnowledgeBase.open(kb) as k:
        now = k.rollback_adapter(domain, version)
    if json_:
        emit_json({"domain": domain, "serving": now.to_dict() if now else None})
    elif now is None:
        typer.echo(f"{domain}: no adapter serves now; the memory still answers.")
    else:
        metrics = _metrics(now.report)
        typer.echo(f"{domain}: now serving {now.version}, made {now.finished_at or '-'}"
                   + (f": {metrics}" if metrics else ""))


def run_lines(run: Any) -> list[str]:
    """What a consolidation run did, one line per domain (also the schedule's log)."""
    return run.to_text().splitlines()


def _metrics(report: dict[str, Any], *, every: bool = False) -> str:
    """Recall before -> after, locality after; `every`: all metrics, before -> after."""
    metrics = report.get("metrics") or {}
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    keys = [k for k in METRICS if k in after or k in before]
    if every:
        keys += [k for k in {**before, **after} if k not in METRICS]
    parts = []
    for k in keys:
        if k == "locality" and not every:
            parts.append(f"locality {metric_value(after.get(k))}")
        else:
            parts.append(f"{METRICS.get(k, k)} {metric_value(before.get(k))} -> {metric_value(after.get(k))}")
    return ", ".join(parts)


def _after(report: dict[str, Any]) -> dict[str, Any]:
    after = (report.get("metrics") or {}).get("after") or {}
    return {k: after[k] for k in METRICS if k in after}


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(consolidate)
    app.command()(schedule)
    app.add_typer(adapters_app, name="adapters")
