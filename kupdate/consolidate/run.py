"""One consolidation: pick the due domains, build, train, evaluate, promote or reject, report.

    <kb>/adapters/<domain>/vNNNN/  adapter_config.json, adapter_model.safetensors (peft),
                                   mask.safetensors, router.npy + router.json, report.json
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kupdate.errors import KupdateError
from kupdate.forget import REBUILD_KEY  # set by `forget`, cleared by a consolidation of the domain


@dataclass
class ConsolidationRun:
    """What `kupdate consolidate` did: one report per domain trained, a reason per domain skipped."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"reports": self.reports, "skipped": self.skipped}

    def to_text(self) -> str:
        """One line per domain trained, then one per domain skipped (`kupdate consolidate`, the
        schedule's log, `%kupdate consolidate`)."""
        lines = [report_line(r) for r in self.reports]
        lines += [f"{d}: not consolidated ({why})" for d, why in self.skipped.items()]
        return "\n".join(lines) or "nothing to consolidate: no domain holds knowledge records"

    def __repr__(self) -> str:  # a one-line stand-in: the reports hold every loss and metric
        promoted = sum(r.get("status") == "promoted" for r in self.reports)
        return (f"<ConsolidationRun: {len(self.reports)} trained ({promoted} promoted, "
                f"{len(self.reports) - promoted} rejected), {len(self.skipped)} skipped; "
                "see .reports, .skipped, .to_dict()>")


#: Report metrics, in the order and words they are printed.
LINE_METRICS = {"fresh_recall": "no-memory recall", "paraphrase_recall": "paraphrase recall"}


def metric_value(value: Any) -> str:
    """A report metric (a Rate dict, or a number) as '0.92'; '-' when absent."""
    value = value.get("value") if isinstance(value, dict) else value
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def report_line(report: dict[str, Any]) -> str:
    """'cf: v0003 promoted in 212 s: no-memory recall 0.10 -> 0.92, locality 1.00' (+ why, if rejected;
    an incremental round says which version it continued)."""
    metrics = report.get("metrics") or {}
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    parts = [f"{words} {metric_value(before.get(k))} -> {metric_value(after.get(k))}"
             for k, words in LINE_METRICS.items() if k in before or k in after]
    if "locality" in after:
        parts.append(f"locality {metric_value(after['locality'])}")
    secs = (report.get("seconds") or {}).get("total")
    line = f"{report.get('domain', '?')}: {report.get('version', '?')} {report.get('status', '?')}"
    step = (report.get("data") or {}).get("incremental")
    line += f" (continued {step.get('from')}, {step.get('new_records')} new records)" if isinstance(step, dict) else ""
    line += f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
    line += f": {', '.join(parts)}" if parts else ""
    reason = (report.get("decision") or {}).get("reason")
    return line + (f" ({reason})" if reason and report.get("status") != "promoted" else "")


def current_records(kb: Any) -> dict[str, list[Any]]:
    """Current knowledge records (not superseded or retired) by domain."""
    from kupdate.answering.retrieval import taken_out

    out: dict[str, list[Any]] = {}
    for r in kb.store.records(kind="knowledge"):
        if not taken_out(r):
            out.setdefault(r.domain, []).append(r)
    return out


def without_outdated(kb: Any, records: list[Any]) -> list[Any]:
    """`records` less those that `ask` calls outdated when asked the cloze of their own statement
    (a fresher memory read on that question gives another value), so an adapter never learns a
    stale value."""
    from kupdate.answering.current import memories_for
    from kupdate.consolidate.dataset import probes_for

    probes = probes_for(records)
    if len(records) < 2 or not probes:
        return records
    vecs = kb.embedder.encode([p.question for p in probes])
    dropped: set[int] = set()
    for p, v in zip(probes, vecs):
        found, _ = memories_for(kb, p.question, v, domain=records[0].domain)
        dropped |= {m.id for m in found if m.outdated and m.id == p.record_id}
    return [r for r in records if r.id not in dropped]


def consolidate(kb: Any, domain: str | None = None, *, if_due: bool = False, force: bool = False,
                progress: bool = False, engine: str = "local") -> ConsolidationRun:
    """Consolidate the domains that need it (see `KnowledgeBase.consolidate`), one after the other
    here, or (`engine="ray"`) all at once on a Ray cluster with the same result on disk."""
    from kupdate.adapters.policy import due

    cfg = kb.config.consolidation
    registry = kb.adapters.registry
    run = ConsolidationRun()
    with registry.lock():
        current = {d: without_outdated(kb, recs) for d, recs in current_records(kb).items()}
        rebuild = set((kb.store.get_meta(REBUILD_KEY, {}) or {}).keys())
        if domain is not None and domain not in current:
            known = ", ".join(sorted(current)) or "none"
            raise KupdateError(f"no current records in domain {domain!r} (domains: {known}); ingest with --domain")
        todo: list[str] = []
        for d in [domain] if domain else sorted(current):
            pending = sum(r.adapter_version is None for r in current[d])
            if force or d in rebuild:
                pass
            elif if_due:
                ok, why = due(pending, registry.last_attempt_at(d), cfg)
                if not ok:
                    run.skipped[d] = why
                    continue
            elif pending == 0:
                run.skipped[d] = "nothing new since the serving version (use --force to retrain)"
                continue
            todo.append(d)
        if engine == "ray" and todo:
            from kupdate.compute.ray_consolidate import consolidate_on_ray

            run.reports += consolidate_on_ray(kb, [(d, current[d]) for d in todo], progress=progress, rebuild=rebuild)
        else:
            run.reports += [consolidate_domain(kb, d, current[d], progress=progress, rebuild=d in rebuild)
                            for d in todo]
    return run


@dataclass
class Candidate:
    """A trained adapter version waiting to be judged: its files are in `folder` (or, trained in
    this process, also attached to the KB's model), its mask in `result.mask`."""

    domain: str
    version: str
    folder: Any
    records: list[Any]
    probes: list[Any]
    data: dict[str, int]
    result: Any  # train.TrainResult
    before: dict[str, Any]
    seconds: dict[str, float]
    started: float
    disjoint_from: list[str]
    device: str
    keys: list[str] | None = None  # routing keys (`dataset.router_keys`); None: the statements' `asked`


def progress_say(domain: str, version: str, progress: bool) -> Any:
    """A function printing '[domain version] message' on stderr (a no-op without `progress`)."""
    if not progress:
        return lambda msg: None
    return lambda msg: print(f"[{domain} {version}] {msg}", file=sys.stderr, flush=True)


def consolidate_domain(kb: Any, domain: str, records: list[Any], *, progress: bool = False,
                       rebuild: bool = False) -> dict[str, Any]:
    """Train, evaluate and promote or reject a new version of `domain`'s adapter: from its serving
    version on the records new since (`incremental`), or from scratch on all (`rebuild`: `forget`
    took something out of the domain, which only a fresh adapter is sure not to hold)."""
    from kupdate.adapters.serving import adapter_name
    from kupdate.consolidate import dataset, evaluate, incremental, masks, train
    from kupdate.consolidate.resume import BuildCache, Partial, key_of

    cfg = kb.config.consolidation
    registry, served = kb.adapters.registry, kb.adapters
    start = time.perf_counter()
    # A killed consolidation of the same records and settings is continued, not redone (`resume`).
    key = key_of(kb, domain, records)
    found = Partial.claim(registry.folder(domain), key)
    version, folder = found or registry.allocate(domain)
    partial = Partial(folder, key)
    partial.start()
    name = adapter_name(domain, version)
    exemplars = kb.exemplars()
    say = progress_say(domain, version, progress)
    if found:
        say("continuing the unfinished consolidation saved in " + str(partial.folder))
    seconds = partial.load("seconds") or {}
    tset = partial.load("tset")
    if tset is None:
        say(f"building the training set from {len(records)} records")
        t = time.perf_counter()
        works = BuildCache(registry.folder(domain))
        tset = dataset.build_for(kb.llm, records, exemplars, kb.config, done=works.load())
        seconds["build"] = time.perf_counter() - t
        if tset.stats.get("records_reused"):
            say(f"{tset.stats['records_reused']} of {len(records)} records' examples taken from earlier builds")
        works.save(tset.works)
        partial.save("tset", tset)
    before = partial.load("before")
    if before is None:
        say(f"{tset.stats['examples']} examples; measuring what serves now")
        t = time.perf_counter()
        before = evaluate.measure(kb, tset.probes, records, exemplars)
        seconds["evaluate_before"] = time.perf_counter() - t
        partial.save("before", before)
        partial.save("seconds", seconds)
    others = {d: p for d, (_, p) in served.serving().items() if d != domain}
    taken = masks.union(masks.load(p) for p in others.values()) if others else None
    start_from = incremental.start_for(kb, domain, records, rebuild=rebuild)
    examples, mask = tset.examples, None
    try:
        train.attach(kb.llm, name, cfg)
        if start_from is not None:
            examples, mask = incremental.begin(kb.llm, name, tset, records, start_from,
                                               incremental.read_start(start_from), cfg)
            step = tset.stats["incremental"]
            say(f"continuing {step['from']}: {step['new_records']} new records, "
                f"{step['rehearsed_examples']} examples rehearsed")
        result = train.train(kb.llm, examples, cfg, name=name, taken=taken, progress=progress, partial=partial,
                             mask=mask)
        seconds["train"] = result.seconds
        _save_adapter(kb.llm.model, name, folder)
    except BaseException:
        served.unload(name)
        raise
    say(f"trained {result.steps} steps ({result.passes:.2f} passes) in {result.seconds:.0f} s; measuring the candidate")
    report = judge(kb, Candidate(domain, version, folder, records, tset.probes, tset.stats, result, before,
                                 seconds, start, sorted(others), str(kb.llm.device),
                                 dataset.router_keys(records, tset.examples)), exemplars)
    partial.clear()
    return report


def judge(kb: Any, c: Candidate, exemplars: list[Any]) -> dict[str, Any]:
    """Measure a trained candidate, promote or reject it, write its report and the registry."""
    from kupdate.adapters.serving import adapter_name, save_router
    from kupdate.consolidate import dataset, evaluate, masks

    cfg = kb.config.consolidation
    served, name = kb.adapters, adapter_name(c.domain, c.version)
    try:
        masks.save(c.result.mask, c.folder)
        texts = c.keys or [dataset.asked(s) for r in c.records for s in dataset.statements(r)]
        keys = kb.embedder.encode(texts)
        save_router(c.folder, texts, keys, kb.config.embedder)
        served.override[c.domain] = (c.version, c.folder)
        t = time.perf_counter()
        [router] = served.routers(c.domain)
        routing = evaluate.route_threshold(kb, router, exemplars)
        router.threshold = routing.threshold
        save_router(c.folder, texts, keys, kb.config.embedder, routing.threshold)
        after = evaluate.measure(kb, c.probes, c.records, exemplars, forced=served.route_to(c.domain))
        c.seconds["evaluate_after"] = time.perf_counter() - t
    except BaseException:
        served.override.pop(c.domain, None)
        served.unload(name)
        raise
    promote, reason = evaluate.decide(c.before, after, cfg.min_locality, cfg.max_forgetting)
    served.override.pop(c.domain, None)
    old = served.serving().get(c.domain)
    if not promote:
        served.unload(name)
    elif old is not None:
        served.unload(adapter_name(c.domain, old[0]))
    held, total = masks.count(c.result.mask)
    c.seconds["total"] = time.perf_counter() - c.started
    result = c.result
    report = {
        "domain": c.domain,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": c.device,
        "dtype": str(kb.llm.dtype),
        "model": kb.config.model,
        "data": c.data,
        "mask": {"density": round(held / total, 4), "entries": held, "of": total, "disjoint_from": c.disjoint_from},
        "losses": {"first": result.losses[0] if result.losses else None,
                   "last": result.losses[-1] if result.losses else None,
                   "per_step": result.losses},
        "training": {"steps": result.steps, "epochs": result.epochs, "tokens": result.tokens,
                     "tokens_per_s": round(result.tokens_per_s, 1),
                     "examples_per_s": round(result.examples / result.seconds, 2) if result.seconds else 0.0,
                     "passes": round(result.passes, 3), "recalled_per_epoch": result.recalled,
                     "checked_at": result.checked_at, "resumed_from_pass": result.resumed_from},
        "routing": {k: v for k, v in routing.to_dict().items() if k != "n_knowledge"} | {"keys": len(texts)},
        "metrics": {"before": c.before, "after": after},
        "decision": {"promoted": promote, "reason": reason},
        "seconds": {k: round(v, 2) for k, v in c.seconds.items()},
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "records": [r.id for r in c.records],
    }
    finished = kb.adapters.registry.finish(c.domain, c.version, report, promote=promote)
    if promote:
        kb.store.set_adapter_version([r.id for r in c.records], c.version)
        _clear_rebuild(kb, c.domain)
    return finished.report


def rollback(kb: Any, domain: str, version: str | None = None) -> Any:
    """Move `domain`'s serving pointer back; refuses a version whose mask overlaps another
    domain's serving mask. Records trained only into the versions rolled away become pending."""
    from kupdate.consolidate import masks

    served = kb.adapters

    def check(candidate: Any) -> None:
        others = {d: vp for d, vp in served.serving().items() if d != domain}
        mine = masks.load(candidate.path) if others else {}
        for d, (v, path) in others.items():
            if masks.overlap(mine, masks.load(path)):
                raise KupdateError(f"{domain} {candidate.version} shares adapter entries with {d} {v}, which "
                                   f"serves now; roll {d} back first or consolidate {domain} again")

    with served.registry.lock():
        now = served.registry.rollback(domain, version, check=check)
        covered = set(now.report.get("records") or []) if now else set()
        stale = [r.id for r in kb.store.records(kind="knowledge", domain=domain)
                 if r.adapter_version is not None and r.id not in covered]
        kb.store.set_adapter_version(stale, None)
        if now:
            kb.store.set_adapter_version(sorted(covered), now.version)
    return now


def _save_adapter(model: Any, name: str, folder: Any) -> None:
    """peft's on-disk layout (adapter_config.json + adapter_model.safetensors) for one adapter."""
    from peft import get_peft_model_state_dict

    write_adapter(get_peft_model_state_dict(model, adapter_name=name), model.peft_config[name], folder)


def write_adapter(state: dict[str, Any], config: Any, folder: Any) -> None:
    """Write an adapter's weights (a peft state dict) and its LoraConfig in peft's layout."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / "adapter_model.safetensors"))
    config.save_pretrained(str(folder))


def _clear_rebuild(kb: Any, domain: str) -> None:
    marked = dict(kb.store.get_meta(REBUILD_KEY, {}) or {})
    if marked.pop(domain, None) is not None:
        kb.store.set_meta(REBUILD_KEY, marked)
