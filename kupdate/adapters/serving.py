"""Serving adapters: load the serving version of each domain into the KB's model, route each
question to the adapters it concerns, and answer with exactly those active.

Routing is the gate's rule applied to an adapter's keys: what each statement it was trained on is
about, without the value it gives (`kupdate.consolidate.dataset.asked`), and the questions the
model wrote about its subjects, kept beside it with their embeddings. A question whose best key
scores at least the adapter's own threshold activates the adapter; any other question is answered
by the base model with every adapter off, so unrelated answers stay exactly as they were. The
threshold is calibrated when the adapter is made, on the exemplars against its keys
(`kupdate.consolidate.evaluate.route_threshold`), so it does not move when the memory grows
(docs/consolidation.md, "Routing"). Masks are disjoint, so several adapters can be active together
(peft adds their outputs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kupdate.answering.gate import relevance
from kupdate.answering.query import Query

ROUTER_KEYS = "router.npy"
ROUTER_TEXTS = "router.json"
ROUTE_CANDIDATES = 4  # keys scored in full per adapter (by dense similarity first)


@dataclass
class Route:
    """An adapter a question was sent to, with its routing score."""

    domain: str
    version: str
    name: str  # the peft adapter name
    score: float

    @property
    def label(self) -> str:
        return f"{self.domain} {self.version}"


@dataclass
class Router:
    domain: str
    version: str
    path: Path
    texts: list[str]
    keys: np.ndarray
    threshold: float | None = None  # None: made before routers were calibrated; the gate's is used

    @property
    def name(self) -> str:
        return adapter_name(self.domain, self.version)


def adapter_name(domain: str, version: str) -> str:
    """peft adapter names become module keys: no dots."""
    return f"{domain}__{version}".replace(".", "_")


def save_router(folder: Path, texts: Sequence[str], keys: np.ndarray, embedder: str,
                threshold: float | None = None) -> None:
    np.save(folder / ROUTER_KEYS, np.asarray(keys, dtype=np.float32))
    info = {"embedder": embedder, "texts": list(texts), "threshold": threshold}
    (folder / ROUTER_TEXTS).write_text(json.dumps(info), encoding="utf-8")


def load_router(domain: str, version: str, folder: Path, embedder: Any, embedder_name: str) -> Router:
    info = json.loads((folder / ROUTER_TEXTS).read_text(encoding="utf-8"))
    if info.get("embedder") == embedder_name:
        keys = np.load(folder / ROUTER_KEYS)
    else:  # the KB was reindexed with another embedder since: re-embed the keys
        keys = embedder.encode(info["texts"])
    return Router(domain, version, folder, info["texts"], np.asarray(keys, dtype=np.float32), info.get("threshold"))


class Adapters:
    """The adapters a KB serves (plus, during a consolidation, the candidate under evaluation)."""

    def __init__(self, kb: Any) -> None:
        from kupdate.adapters.registry import AdapterRegistry

        self.kb = kb
        self.registry = AdapterRegistry(kb.path / "adapters")
        self._routers: dict[str, Router] = {}  # by adapter name
        self.override: dict[str, tuple[str, Path] | None] = {}  # domain -> (version, folder) or None

    def serving(self) -> dict[str, tuple[str, Path]]:
        """domain -> (version, folder) of what serves now (overrides applied)."""
        out = {d: (v.version, v.path) for d, v in self.registry.serving_all().items()}
        for domain, choice in self.override.items():
            if choice is None:
                out.pop(domain, None)
            else:
                out[domain] = choice
        return out

    def routers(self, domain: str | None = None) -> list[Router]:
        routers = []
        for d, (version, folder) in sorted(self.serving().items()):
            if domain is not None and d != domain:
                continue
            name = adapter_name(d, version)
            if name not in self._routers:
                self._routers[name] = load_router(d, version, folder, self.kb.embedder, self.kb.config.embedder)
            routers.append(self._routers[name])
        return routers

    def route(self, question: str, qvec: np.ndarray, *, domain: str | None = None) -> list[Route]:
        """The adapters `question` concerns: best key relevance at least the adapter's threshold."""
        routes = []
        for r, score in zip(routers := self.routers(domain), self.scores(question, qvec, routers)):
            if score >= self.threshold(r):
                routes.append(Route(r.domain, r.version, r.name, round(score, 4)))
        return routes

    def scores(self, question: str, qvec: np.ndarray, routers: Sequence[Router]) -> list[float]:
        """`question`'s best key relevance for each of `routers` (the gate's rule)."""
        return [max([0.0] + [s for _, s in c]) for c in self.key_scores(question, qvec, routers)]

    def key_scores(self, question: str, qvec: np.ndarray, routers: Sequence[Router]) -> list[list[tuple[int, float]]]:
        """For each of `routers`, the keys `question` is scored against in full (the
        `ROUTE_CANDIDATES` nearest by dense similarity) as (key index, relevance)."""
        if not routers:
            return []
        query = Query.for_store(question, self.kb.store, self.kb.language)
        fvec = self.kb.embedder.encode([query.asking])[0] if query.asking else None
        out = []
        for r in routers:
            dense = r.keys @ qvec
            focus = r.keys @ fvec if fvec is not None else dense
            out.append([(int(i), relevance(query, r.texts[i], float(dense[i]), self.kb.config.gate,
                                           focus_dense=float(focus[i])).score)
                        for i in np.argsort(-np.maximum(dense, focus))[:ROUTE_CANDIDATES]])
        return out

    def threshold(self, router: Router) -> float:
        """The score a question needs to activate `router`'s adapter: `[gate] threshold` when set,
        else the adapter's calibrated one, else (an adapter made before those) the gate's."""
        if self.kb.config.gate.threshold is not None or router.threshold is None:
            return self.kb.threshold()
        return router.threshold

    def route_to(self, domain: str) -> list[Route]:
        """A route to `domain`'s serving adapter whatever the question (forced)."""
        r = next((r for r in self.routers(domain)), None)
        return [Route(r.domain, r.version, r.name, 1.0)] if r else []

    @contextmanager
    def active(self, routes: Sequence[Route]) -> Iterator[None]:
        """Answer with exactly the adapters of `routes` active (none: the base model)."""
        from kupdate.consolidate.train import adapters_off

        model = self.kb.llm.model
        if not routes:
            with adapters_off(model):
                yield
            return
        for r in routes:
            self._load(r)
        self.kb.llm.model.base_model.set_adapter([r.name for r in routes], inference_mode=True)
        yield

    def _load(self, route: Route) -> None:
        from peft import PeftModel

        llm = self.kb.llm
        folder = self._routers[route.name].path
        if isinstance(llm.model, PeftModel):
            if route.name not in llm.model.peft_config:
                llm.model.load_adapter(str(folder), adapter_name=route.name, is_trainable=False)
        else:
            llm.model = PeftModel.from_pretrained(llm.model, str(folder), adapter_name=route.name)
        llm.model.eval()

    def unload(self, name: str) -> None:
        """Drop an adapter from the model (a rejected candidate)."""
        from peft import PeftModel

        llm = self.kb.llm
        self._routers.pop(name, None)
        if not isinstance(llm.model, PeftModel) or name not in llm.model.peft_config:
            return
        if len(llm.model.peft_config) == 1:
            # The last adapter: put the plain model back (peft cannot hold zero adapters).
            llm.model = llm.model.unload()
        else:
            llm.model.delete_adapter(name)
            llm.model.base_model.set_adapter(next(iter(llm.model.peft_config)), inference_mode=True)
        llm.model.eval()
