"""Serving adapters: load the serving version of each domain into the KB's model, route each
question to the adapters it concerns, and answer with exactly those active.

Routing is the gate's rule applied to an adapter's keys: the statements it was trained on (kept
beside it, with their embeddings). A question whose best key scores at least the gate threshold
activates the adapter; any other question is answered by the base model with every adapter off,
so unrelated answers stay exactly as they were. Masks are disjoint, so several adapters can be
active together (peft adds their outputs).
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

    @property
    def name(self) -> str:
        return adapter_name(self.domain, self.version)


def adapter_name(domain: str, version: str) -> str:
    """peft adapter names become module keys: no dots."""
    return f"{domain}__{version}".replace(".", "_")


def save_router(folder: Path, texts: Sequence[str], keys: np.ndarray, embedder: str) -> None:
    np.save(folder / ROUTER_KEYS, np.asarray(keys, dtype=np.float32))
    (folder / ROUTER_TEXTS).write_text(json.dumps({"embedder": embedder, "texts": list(texts)}), encoding="utf-8")


def load_router(domain: str, version: str, folder: Path, embedder: Any, embedder_name: str) -> Router:
    info = json.loads((folder / ROUTER_TEXTS).read_text(encoding="utf-8"))
    if info.get("embedder") == embedder_name:
        keys = np.load(folder / ROUTER_KEYS)
    else:  # the KB was reindexed with another embedder since: re-embed the keys
        keys = embedder.encode(info["texts"])
    return Router(domain, version, folder, info["texts"], np.asarray(keys, dtype=np.float32))


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
        """The adapters `question` concerns: best key relevance at least the gate threshold."""
        routers = self.routers(domain)
        if not routers:
            return []
        store = self.kb.store
        query = Query.for_store(question, store, self.kb.language)
        fvec = self.kb.embedder.encode([query.asking])[0] if query.asking else None
        threshold = self.kb.threshold()
        routes = []
        for r in routers:
            dense = r.keys @ qvec
            focus = r.keys @ fvec if fvec is not None else dense
            best = 0.0
            for i in np.argsort(-np.maximum(dense, focus))[:ROUTE_CANDIDATES]:
                best = max(best, relevance(query, r.texts[i], float(dense[i]), self.kb.config.gate,
                                           focus_dense=float(focus[i])).score)
            if best >= threshold:
                routes.append(Route(r.domain, r.version, r.name, round(best, 4)))
        return routes

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
