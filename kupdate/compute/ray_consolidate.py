"""Consolidation on Ray: the due domains train at the same time, one Ray actor each (one GPU each
where the cluster has GPUs); this process allots the masks, judges, promotes and writes.

Per domain the actor rebuilds the model from the config, builds the training set from the
domain's records (handed over as values) and runs the dense warm-up that scores the adapter's
entries. The driver then allots the entries domain by domain in name order, the order of a
sequential run: each domain's mask leaves out the entries of every other domain's serving mask
and of the masks allotted before it in this run, so domains trained together are disjoint from
each other and from what serves. The actors train under their masks and return the weights; the
driver judges the candidates one by one in name order, exactly as a sequential run does (each
measured against what serves at that moment), and is the only one to touch the KB on disk.
"""

from __future__ import annotations

import time
from typing import Any

from kupdate.compute.engine import cluster_gpus, connect


class DomainTrainer:
    """One domain's training, inside a Ray actor: `prepare` (training set + importance), then `train`."""

    def __init__(self, config: Any, cache_dir: str) -> None:
        from pathlib import Path

        from kupdate.models import load_llm

        self.config = config
        device = None if config.device == "auto" else config.device
        self.llm = load_llm(config.model, cache_dir=Path(cache_dir), device=device)
        self.trainer: Any = None

    def prepare(self, name: str, records: list[Any], exemplars: list[Any], start: Any = None,
                weights: Any = None) -> dict[str, Any]:
        """Build the training set and score the entries; an incremental round (`start`, with the
        serving version's `weights` and mask) starts from those weights and keeps that mask."""
        from kupdate.consolidate import dataset, incremental, train

        cfg = self.config.consolidation
        t = time.perf_counter()
        tset = dataset.build_for(self.llm, records, exemplars, self.config)
        build = time.perf_counter() - t
        train.attach(self.llm, name, cfg)
        self.name = name
        examples, out = tset.examples, {"data": tset.stats, "build": build, "device": str(self.llm.device),
                                        "keys": dataset.router_keys(records, tset.examples)}
        if start is not None:
            examples, _ = incremental.begin(self.llm, name, tset, records, start, weights, cfg)
            out["mask"] = weights[1]
        self.trainer = train.Trainer(self.llm, examples, cfg, name=name)
        if start is None:
            out["importance"] = {n: v.cpu() for n, v in self.trainer.importance().items()}
        return out

    def train(self, mask: dict[str, Any]) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        result = self.trainer.run(mask)
        model = self.llm.model
        state = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=self.name).items()}
        result.mask = {n: m.cpu() for n, m in result.mask.items()}
        return {"result": result, "state": state, "lora": model.peft_config[self.name]}


def allot(importance: dict[str, dict[str, Any]], serving_masks: dict[str, dict[str, Any]],
          density: float, kept: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Masks for domains trained together, in name order: each leaves out the other domains'
    serving masks and the masks allotted before it. `kept`: domains continuing their serving
    version (incremental rounds) keep its mask, already disjoint from the others'."""
    from kupdate.consolidate import masks

    allotted: dict[str, dict[str, Any]] = dict(kept or {})
    for domain in sorted(importance):
        held = [m for d, m in serving_masks.items() if d != domain] + list(allotted.values())
        allotted[domain] = masks.select(importance[domain], density, masks.union(held) if held else None)
    return allotted


def consolidate_on_ray(kb: Any, todo: list[tuple[str, list[Any]]], *, progress: bool = False,
                       rebuild: set[str] = frozenset()) -> list[dict[str, Any]]:
    """Train `todo` (domain, current records) at the same time on the cluster; judge here.
    `rebuild`: domains trained from scratch even where an incremental round could continue."""
    from kupdate import paths
    from kupdate.adapters.serving import adapter_name
    from kupdate.consolidate import evaluate, incremental, masks
    from kupdate.consolidate.dataset import probes_for
    from kupdate.consolidate.run import Candidate, judge, progress_say, write_adapter

    ray = connect(kb.config.compute)
    gpus = 1 if cluster_gpus(ray) else 0
    actor_cls = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1)(DomainTrainer)
    registry, served = kb.adapters.registry, kb.adapters
    exemplars = kb.exemplars()
    start = time.perf_counter()
    jobs = []
    for domain, records in todo:
        version, folder = registry.allocate(domain)
        progress_say(domain, version, progress)(f"training on Ray from {len(records)} records")
        actor = actor_cls.remote(kb.config, str(paths.cache_dir(kb.path)))
        begin = incremental.start_for(kb, domain, records, rebuild=domain in rebuild)
        weights = incremental.read_start(begin) if begin is not None else None
        jobs.append((domain, version, folder, records, actor,
                     actor.prepare.remote(adapter_name(domain, version), records, exemplars, begin, weights)))
    actors = [job[4] for job in jobs]
    try:
        prepared = dict(zip([j[0] for j in jobs], ray.get([j[5] for j in jobs])))
        serving = {d: masks.load(p) for d, (_, p) in served.serving().items()}
        allotted = allot({d: p["importance"] for d, p in prepared.items() if "importance" in p}, serving,
                         kb.config.consolidation.density,
                         kept={d: p["mask"] for d, p in prepared.items() if "mask" in p})
        trained = ray.get([actor.train.remote(allotted[d]) for d, _, _, _, actor, _ in jobs])
    finally:
        for actor in actors:
            ray.kill(actor)
    reports = []
    for (domain, version, folder, records, _, _), out in zip(jobs, trained):
        prep = prepared[domain]
        write_adapter(out["state"], out["lora"], folder)
        seconds = {"build": prep["build"]}
        t = time.perf_counter()
        probes = probes_for(records)  # the training set's probes: they need no model
        before = evaluate.measure(kb, probes, records, exemplars)
        seconds["evaluate_before"] = time.perf_counter() - t
        seconds["train"] = out["result"].seconds
        disjoint = sorted(({d for d in serving if d != domain}) | {d for d, _ in todo if d != domain})
        progress_say(domain, version, progress)(f"trained {out['result'].steps} steps; measuring the candidate")
        reports.append(judge(kb, Candidate(domain, version, folder, records, probes, prep["data"], out["result"],
                                           before, seconds, start, disjoint, prep["device"], prep["keys"]),
                           exemplars))
    return reports
