"""`KnowledgeBase`: the facade the CLI, notebooks and benchmarks use.

    kb = KnowledgeBase.init("my-kb")            # or KnowledgeBase.open("my-kb")
    kb.ingest(["docs/"])
    answer = kb.ask("Who leads Brindlemoor Robotics?")
    print(answer.answer, answer.gate.open, [m.record.source for m in answer.citations])

Models load lazily on first use, so opening a KB to count records costs no model load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kupdate import paths
from kupdate.answering.gate import Calibration, calibrated_threshold
from kupdate.config import CONFIG_NAME, Config, dump_config, load_config
from kupdate.errors import ConfigError, EmbedderMismatch, KBNotFound, KupdateError
from memory_store import Record, content_hash, open_store

CALIBRATION_KEY = "gate_calibration"


@dataclass
class Status:
    """What `kupdate status` reports."""

    kb: str
    model: str
    embedder: str
    device: str
    knowledge: int
    outdated: int
    exemplars: int
    domains: dict[str, int]
    gate: dict[str, Any] | None
    disk_bytes: int

    def to_text(self) -> str:
        """What `kupdate status` prints."""
        lines = [f"knowledge base: {self.kb}", f"model: {self.model}", f"embedder: {self.embedder}",
                 f"device: {self.device}",
                 f"records: {self.knowledge} knowledge ({self.outdated} superseded or retired), "
                 f"{self.exemplars} exemplars"]
        lines += [f"  domain {d}: {n}" for d, n in sorted(self.domains.items())]
        if self.gate:
            lines.append(f"gate threshold: {self.gate['threshold']:.3f} "
                         f"(highest exemplar score {self.gate['max_exemplar_score']:.3f})")
        lines.append(f"disk: {self.disk_bytes / 1e6:.1f} MB")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExemplarReport:
    """What `kupdate exemplars add` did: questions read, added, already present, total now."""

    file: str
    read: int
    added: int
    duplicates: int
    total: int
    gate: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KnowledgeBase:
    """A knowledge base on disk: config, memory store, and lazily loaded models."""

    def __init__(self, path: Path, config: Config, store: Any) -> None:
        self.path = path
        self.config = config
        self.store = store
        self._embedder: Any = None
        self._llm: Any = None
        self._adapters: Any = None

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | Path | None = None, *, model: str | None = None, embedder: str | None = None,
             device: str | None = None, exemplars: str | Path | None = None, backend: str | None = None,
             uri: str | None = None, progress: bool = False) -> KnowledgeBase:
        """Create a KB: write kupdate.toml, store the exemplars with the base model's answers.

        `backend="milvus"` with `uri` (a milvus-lite file or a server URL) keeps vectors in Milvus.
        """
        kb = paths.resolve_kb(path)
        if (kb / CONFIG_NAME).exists():
            raise KupdateError(f"a knowledge base already exists at {kb}; use it, or pick another --kb")
        overrides: dict[str, Any] = {"model": model, "embedder": embedder, "device": device, "backend": backend}
        if uri:
            overrides["memory"] = {"uri": uri}
        config = load_config(kb, overrides)
        kb.mkdir(parents=True, exist_ok=True)
        try:
            self = cls._create(kb, config)
            _ = self.embedder, self.llm  # a missing model fails here, before anything is stored
            self.add_exemplars(_read_exemplars(exemplars), progress=progress)
            self.calibrate()
        except BaseException:
            # A half-made KB would be refused as "already exists" next time: remove what we made.
            shutil.rmtree(kb / "memory", ignore_errors=True)
            (kb / CONFIG_NAME).unlink(missing_ok=True)
            raise
        return self

    @classmethod
    def _create(cls, kb: Path, config: Config) -> KnowledgeBase:
        from kupdate.models import load_embedder

        emb = load_embedder(config.embedder, device=_device(config))
        store = open_store(paths.memory_dir(kb), dim=emb.dim, embedder=config.embedder, create=True,
                           **store_options(config))
        (kb / CONFIG_NAME).write_text(dump_config(config), encoding="utf-8")
        self = cls(kb, config, store)
        self._embedder = emb
        return self

    @classmethod
    def open(cls, path: str | Path | None = None, **overrides: Any) -> KnowledgeBase:
        """Open an existing KB; `overrides` (model, embedder, device) win over kupdate.toml."""
        kb = paths.resolve_kb(path)
        if not (kb / CONFIG_NAME).exists():
            raise KBNotFound(f"no knowledge base at {kb}; create one with `kupdate init --kb {kb}`")
        config = load_config(kb, overrides)
        try:
            store = open_store(paths.memory_dir(kb), dim=0, embedder=config.embedder, create=False,
                               **store_options(config))
        except EmbedderMismatch as exc:
            if exc.built_with is None:
                raise
            raise EmbedderMismatch(
                f"{exc}; to move it to {config.embedder!r}, run `kupdate reindex --embedder {config.embedder} "
                f"--kb {kb}` while embedder = {exc.built_with!r} is configured",
                built_with=exc.built_with,
            ) from None
        return cls(kb, config, store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from kupdate.models import load_embedder

            self._embedder = load_embedder(self.config.embedder, device=_device(self.config))
        return self._embedder

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from kupdate.models import load_llm

            self._llm = load_llm(self.config.model, cache_dir=paths.cache_dir(self.path),
                                 device=_device(self.config))
        return self._llm

    @property
    def language(self) -> Any:
        """The `kupdate.language.Language` of this KB's questions and documents."""
        from kupdate.language import get_language

        return get_language(self.config.language)

    @property
    def adapters(self) -> Any:
        """The domain adapters this KB serves (`kupdate.adapters.serving.Adapters`)."""
        if self._adapters is None:
            from kupdate.adapters.serving import Adapters

            self._adapters = Adapters(self)
        return self._adapters

    # -- consolidation ---------------------------------------------------------------------------
    def consolidate(self, domain: str | None = None, *, if_due: bool = False, force: bool = False,
                    progress: bool = False, engine: str | None = None) -> Any:
        """Distil the memory of each domain with new records (or only `domain`) into a new sparse
        LoRA adapter version, evaluate it against what serves and promote it only if it is better
        and keeps locality (DESIGN.md section 7). `if_due`: only domains the policy says are due
        (`[consolidation] min_new_records`, `min_interval`); `force`: retrain even with nothing new.
        `engine` ('local' or 'ray', default `[compute] engine`): with 'ray' the domains train at the
        same time on the cluster. Returns a `ConsolidationRun` (reports and skipped domains)."""
        from kupdate.compute.engine import choose_engine
        from kupdate.consolidate.run import consolidate

        return consolidate(self, domain, if_due=if_due, force=force, progress=progress,
                           engine=choose_engine(self.config.compute, engine))

    def rollback_adapter(self, domain: str, version: str | None = None) -> Any:
        """Serve the previous promoted version of `domain`'s adapter (or `version`); returns what
        serves now (None: no adapter, the memory alone answers)."""
        from kupdate.consolidate.run import rollback

        return rollback(self, domain, version)

    # -- memory ----------------------------------------------------------------------------------
    def ingest(self, sources: Sequence[str | Path], *, domain: str | None = None, as_of: str | None = None,
               skip_bad: bool = False, progress: bool = False, prune: bool = False,
               engine: str | None = None) -> Any:
        """Ingest files, folders or globs; changed files replace their old chunks (kept in history),
        `prune` retires chunks of files under the given folders that are gone. Recalibrates the gate
        when the memory changed. Holds the write lock throughout: a second writer waits up to
        `[memory] lock_timeout`, then fails with StoreLocked. `engine` ('local' or 'ray', default
        `[compute] engine`): with 'ray', Ray workers load, chunk and embed; this process writes."""
        from kupdate.compute.engine import choose_engine
        from kupdate.ingest.pipeline import ingest

        engine = choose_engine(self.config.compute, engine)
        with self.store.write_lock():
            report = ingest(self.store, self.embedder if engine == "local" else None, sources, self.config,
                            domain=domain, as_of=as_of, skip_bad=skip_bad, progress=progress, prune=prune,
                            engine=engine)
            # Also when a previous run was killed between storing and calibrating.
            if report.added or report.retired or report.restored or report.pruned or self._calibration_stale():
                self.calibrate()
        return report

    def forget(self, *, source: str | Path | None = None, ids: Sequence[int] | None = None,
               query: str | None = None, dry_run: bool = False) -> Any:
        """Remove records for real (SQLite, full text, dense index) by source, ids or query; see
        `kupdate.forget` for the rules. Returns a `ForgetReport`; `dry_run` changes nothing."""
        from kupdate.forget import forget

        return forget(self, source=source, ids=ids, query=query, dry_run=dry_run)

    def history(self, query: str) -> list[Any]:
        """Every version (current, superseded, retired) of the facts matching `query`, newest first,
        as `HistoryGroup`s: one per structured (subject, relation), one for free text."""
        from kupdate.history import history

        if not query.strip():
            raise KupdateError("the query is empty; pass what to look for, e.g. kupdate history 'Orla vessel'")
        return history(self, query)

    def search(self, query: str, *, k: int | None = None, domain: str | None = None,
               as_of: str | None = None) -> list[Any]:
        """Memories ranked by relevance (the gate's score), outdated ones flagged."""
        from kupdate.answering.retrieval import retrieve
        from kupdate.ingest.dates import parse_date

        as_of = parse_date(as_of, where="--as-of") if as_of else None
        qvec = self.embedder.encode([query])[0]
        found = retrieve(self.store, query, qvec, retrieval=self.config.retrieval, gate=self.config.gate,
                         domain=domain, as_of=as_of, encode=self.embedder.encode)
        return found[: k or self.config.retrieval.top_k]

    def ask(self, question: str, *, memory: bool = True, adapter: bool = True, as_of: str | None = None,
            domain: str | None = None) -> Any:
        """Answer `question`; memory is injected only when the gate opens, and the domain adapters
        the question routes to are active unless `adapter=False`. Returns an `Answer`.

        `memory=False` asks the adapters alone; `memory=False, adapter=False` the base model."""
        from kupdate.answering.answer import ask
        from kupdate.ingest.dates import parse_date

        if not question.strip():
            raise KupdateError("the question is empty; pass a question, e.g. kupdate ask 'Who leads X?'")
        as_of = parse_date(as_of, where="--as-of") if as_of else None
        return ask(self, question, memory=memory, adapter=adapter, as_of=as_of, domain=domain)

    def ask_batch(self, questions: list[str], *, memory: bool = True, adapter: bool = True,
                  as_of: str | None = None, domain: str | None = None) -> list[Any]:
        """`ask` for each of `questions` (same options), the model work batched across them: each
        gets the `Answer` it gets alone, in less time than asking one after the other."""
        from kupdate.answering.answer import ask_batch
        from kupdate.ingest.dates import parse_date

        empty = [i for i, q in enumerate(questions) if not q.strip()]
        if empty:
            raise KupdateError(f"question {empty[0] + 1} of {len(questions)} is empty; pass a question for each")
        as_of = parse_date(as_of, where="--as-of") if as_of else None
        return ask_batch(self, questions, memory=memory, adapter=adapter, as_of=as_of, domain=domain)

    # -- gate ------------------------------------------------------------------------------------
    def threshold(self) -> float:
        if self.config.gate.threshold is not None:
            return self.config.gate.threshold
        cal = self.store.get_meta(CALIBRATION_KEY)
        return float(cal["threshold"]) if cal else self.config.gate.floor

    def _calibration_stale(self) -> bool:
        cal = self.store.get_meta(CALIBRATION_KEY)
        return not cal or cal.get("n_knowledge") != self.store.count("knowledge")

    def calibrate(self) -> Calibration:
        """Set the gate threshold so every exemplar question keeps its base answer (DESIGN.md section 6).

        Exemplars are scored against the memory; the best ones that would raise the threshold
        above the floor are then asked with the gate open, best first, until one changes its
        answer: the threshold goes just above that one (`gate.calibrated_threshold`).
        """
        from kupdate.answering.answer import ask
        from kupdate.answering.gate import binding_exemplars
        from kupdate.answering.retrieval import retrieve

        gate = self.config.gate
        exemplars = list(self.store.records(kind="exemplar"))
        vectors = self.store.vectors([r.id for r in exemplars]) if exemplars else []
        scores = []
        for rec, vec in zip(exemplars, vectors):
            found = retrieve(self.store, rec.text, vec, retrieval=self.config.retrieval, gate=gate,
                             encode=self.embedder.encode)
            scores.append(max((m.score for m in found if not m.outdated), default=0.0))
        harmless: set[int] = set()
        checked = 0
        if gate.threshold is None:
            for i in binding_exemplars(scores, gate):
                base = exemplars[i].meta.get("base_answer")
                if base is None:
                    break
                checked += 1
                if ask(self, exemplars[i].text, adapter=False, threshold=0.0).answer.strip() != base.strip():
                    break
                harmless.add(i)
        cal = calibrated_threshold(scores, gate, self.store.count("knowledge"), harmless, checked)
        self.store.set_meta(CALIBRATION_KEY, cal.to_dict())
        return cal

    def add_exemplars(self, items: list[dict[str, Any]], *, progress: bool = False) -> int:
        """Store exemplar questions with the base model's answers (what must not change)."""
        from kupdate.answering.decoding import generate
        from kupdate.answering.prompt import base_prompt

        # Known questions are dropped first: no base-model generation for what is already stored.
        known = self.store.existing_hashes({content_hash(it["question"]) for it in items}, kind="exemplar")
        items = [it for it in items if content_hash(it["question"]) not in known]
        if not items:
            return 0
        questions = [it["question"] for it in items]
        batch = self.config.generation.exemplar_batch_size
        answers: list[str] = []
        from tqdm import tqdm  # plain tqdm on stderr: no widget warning in notebooks

        for i in tqdm(range(0, len(questions), batch), desc="base answers", unit="batch",
                      disable=not progress, leave=False):
            prompts = [base_prompt(self.llm.tokenizer, q) for q in questions[i : i + batch]]
            answers += generate(self.llm, prompts, max_new_tokens=self.config.generation.max_new_tokens)
        records = [
            Record(text=q, kind="exemplar", domain=it.get("domain", "general"), source=it.get("source", "exemplars"),
                   meta={"base_answer": a})
            for q, a, it in zip(questions, answers, items)
        ]
        vectors = self.embedder.encode(questions)
        return len(self.store.add(records, vectors))

    def reindex(self, embedder: str | None = None, *, progress: bool = False) -> Any:
        """Re-embed every record with `embedder` (default: the configured one), rebuild the dense
        index, point kupdate.toml at it and recalibrate the gate. Returns a `ReindexReport`.

        Interrupting it is safe: the store keeps its old vectors until it swaps in all new ones.
        """
        from kupdate.models import load_embedder
        from kupdate.reindex import reembed, set_config_embedder

        spec = embedder or self.config.embedder
        emb = load_embedder(spec, device=_device(self.config))
        report = reembed(self.store, emb, spec, batch_size=self.config.ingest.batch_size, progress=progress)
        if spec != self.config.embedder:
            set_config_embedder(self.path / CONFIG_NAME, spec)
            self.config.embedder = spec
        self._embedder = emb
        report.gate = self.calibrate().to_dict()
        return report

    def exemplars(self) -> list[Record]:
        """The exemplar questions with the base model's answers (`meta["base_answer"]`), in id order."""
        return list(self.store.records(kind="exemplar"))

    def import_exemplars(self, path: str | Path, *, progress: bool = False) -> ExemplarReport:
        """Add the questions of a JSONL file (`{"question": ..., "domain"?: ...}` per line) as
        exemplars with the base model's answers, then recalibrate the gate."""
        items = _read_exemplars(path)
        with self.store.write_lock():
            added = self.add_exemplars(items, progress=progress)
            gate = self.calibrate().to_dict() if added else self.store.get_meta(CALIBRATION_KEY)
        return ExemplarReport(str(path), len(items), added, len(items) - added,
                              self.store.count("exemplar"), gate)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> Status:
        domains: dict[str, int] = {}
        outdated = 0
        for r in self.store.records(kind="knowledge"):
            domains[r.domain] = domains.get(r.domain, 0) + 1
            outdated += r.superseded_by is not None or r.valid_to is not None
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and "cache" not in p.parts)
        return Status(str(self.path), self.config.model, self.config.embedder, _device(self.config),
                      self.store.count("knowledge"), outdated, self.store.count("exemplar"), domains,
                      self.store.get_meta(CALIBRATION_KEY), size)


def store_options(config: Config) -> dict[str, Any]:
    """The memory store's settings from config (memory_store takes plain values, not our config)."""
    m = config.memory
    return {"backend": config.backend, "uri": m.uri or None, "index": m.index,
            "approximate_above": m.approximate_above, "lock_timeout": m.lock_timeout}


def _device(config: Config) -> str:
    from kupdate.models.device import pick_device

    return pick_device(None if config.device == "auto" else config.device)


def _read_exemplars(path: str | Path | None) -> list[dict[str, Any]]:
    """The exemplar questions: a JSONL file of {"question": ...} objects, or the shipped default set."""
    if path is None:
        text = resources.files("kupdate").joinpath("data/exemplars.jsonl").read_text(encoding="utf-8")
        where = "kupdate/data/exemplars.jsonl"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read exemplars ({exc})") from None
        where = str(path)
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}:{n}: malformed JSON line ({exc.msg}); fix or remove it") from None
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise ConfigError(f'{where}:{n}: each line needs a "question" string')
        items.append(item)
    return items
