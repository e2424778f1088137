"""One config: dataclasses read from `<kb>/kupdate.toml`.

Every field has a default and a help string; unknown keys are an error naming the key.
Precedence: command-line flag > environment (`KUPDATE_MODEL`, `KUPDATE_EMBEDDER`, `KUPDATE_DEVICE`)
> file > default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from kupdate.errors import ConfigError

CONFIG_NAME = "kupdate.toml"
KB_FORMAT_VERSION = 1
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class IngestConfig:
    chunk_tokens: int = _f(200, "Maximum tokens (embedder tokenizer) per chunk.")
    chunk_overlap: int = _f(32, "Tokens of trailing sentences repeated at the start of the next chunk.")
    max_file_mb: float = _f(50.0, "Files larger than this are refused.")
    batch_size: int = _f(64, "Chunks embedded and committed per batch.")

    def __post_init__(self) -> None:
        if self.chunk_tokens < 8:
            raise ConfigError(f"ingest.chunk_tokens must be at least 8, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise ConfigError("ingest.chunk_overlap must be >= 0 and smaller than ingest.chunk_tokens")
        if self.max_file_mb <= 0 or self.batch_size < 1:
            raise ConfigError("ingest.max_file_mb and ingest.batch_size must be positive")


@dataclass
class RetrievalConfig:
    top_k: int = _f(4, "Memories handed to the model when the gate opens.")
    window: float = _f(0.15, "Memories scoring within this of the best one are quoted too (up to top_k).")
    candidates: int = _f(20, "Candidates fetched from each of dense and lexical search before fusion.")
    show_outdated: bool = _f(False, "Also quote outdated memories in the prompt, marked as outdated.")
    focus_sentences: int = _f(
        3, "Quote only the most relevant sentences of the memories given (0: quote whole memories)."
    )

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.candidates < self.top_k:
            raise ConfigError("retrieval.top_k must be >= 1 and retrieval.candidates >= top_k")


@dataclass
class FreshnessConfig:
    read: bool = _f(True, "Read each competing memory with the question to find which is current (docs/answering.md).")
    candidates: int = _f(6, "At most this many memories (those the gate would quote) are read per question.")
    min_grounded: float = _f(
        0.5, "Share of the words a reading adds to the question that its memory must contain for it to count as an answer."
    )
    same_value: float = _f(0.5, "Overlap (Jaccard) of two readings' added words from which they give the same value.")
    window: float = _f(
        0.03, "A competing memory whose best statement scores within this of the best statement of all is read from "
        "its best statements (else from its version statement); within it, one picking out an alternative the "
        "question lists competes even below freshness.version."
    )
    version: float = _f(
        0.75, "A memory competes on a question (may outdate or be outdated) when one of its statements states another "
        "version of the best statement's fact: their cosine plus its cosine with the question, the shared subject's "
        "words left out, at least this (docs/answering.md)."
    )

    def __post_init__(self) -> None:
        if self.candidates < 2:
            raise ConfigError("freshness.candidates must be >= 2")
        if not 0 <= self.window <= 1 or not -2 <= self.version <= 2:
            raise ConfigError("freshness.window must be in [0, 1] and freshness.version in [-2, 2]")
        if not (0 <= self.min_grounded <= 1 and 0 < self.same_value <= 1):
            raise ConfigError("freshness.min_grounded must be in [0, 1] and freshness.same_value in (0, 1]")


@dataclass
class GateConfig:
    floor: float = _f(0.45, "The threshold never goes below this, whatever calibration says.")
    margin: float = _f(0.08, "Added to the highest binding exemplar score when calibrating the threshold.")
    ceiling: float = _f(0.8, "The calibrated threshold never goes above this.")
    threshold: float | None = _f(None, "Fixed threshold; when set, calibration is skipped.")
    dense_weight: float = _f(0.6, "Weight of the dense cosine in the gate score.")
    lexical_weight: float = _f(0.1, "Weight of IDF-weighted term coverage in the gate score.")
    entity_weight: float = _f(0.3, "Weight of named-entity coverage in the gate score.")
    min_entity_coverage: float = _f(
        0.5, "A memory covering less than this share of the question's names (IDF-weighted) scores "
        "proportionally less, so a question about another subject of the same shape keeps the gate shut."
    )
    choice_weight: float = _f(
        0.7, "For a question listing alternatives ('Options: a; b; c'), a memory supporting one of them "
        "(choice_margin) closes this share of the gap between its score and 1 (and is not scaled down "
        "by min_entity_coverage). Exemplars list none, so calibration is unchanged."
    )
    choice_margin: float = _f(
        0.2, "A memory supports one alternative when the IDF-weighted share of that alternative's terms it "
        "contains (1 when it names it whole) beats every other alternative's by at least this; the answer "
        "is then that alternative."
    )
    check_answers: int = _f(
        16, "Calibration asks up to this many of the highest-scoring exemplars with the gate open; one the "
        "memory leaves answered exactly as the base model answers it does not bind the threshold. 0: scores only."
    )

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.ceiling <= 1:
            raise ConfigError("gate: need 0 <= floor <= ceiling <= 1")
        total = self.dense_weight + self.lexical_weight + self.entity_weight
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"gate: dense_weight + lexical_weight + entity_weight must be 1, got {total:g}")
        if self.check_answers < 0:
            raise ConfigError("gate.check_answers must be >= 0")
        if not 0 <= self.choice_weight <= 1:
            raise ConfigError("gate.choice_weight must be between 0 and 1")
        if not 0 < self.choice_margin <= 1:
            raise ConfigError("gate.choice_margin must be above 0 and at most 1")


@dataclass
class GenerationConfig:
    max_new_tokens: int = _f(48, "Tokens generated per answer.")
    copy_mix: float = _f(
        0.8, "Weight of the copy distribution over memory continuations mixed into the model's (0: off)."
    )
    exemplar_batch_size: int = _f(16, "Batch size when recording the base model's exemplar answers.")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("generation.max_new_tokens must be >= 1")
        if not 0 <= self.copy_mix < 1:
            raise ConfigError("generation.copy_mix must be in [0, 1)")


@dataclass
class ConsolidationConfig:
    min_new_records: int = _f(20, "A domain is due once it has this many records not yet consolidated...")
    min_interval: str = _f("6h", "...and its last consolidation is at least this old ('30m', '6h', '2d').")
    density: float = _f(0.1, "Share of adapter entries a domain's sparse mask lets change (disjoint across domains).")
    rank: int = _f(8, "LoRA rank of the domain adapters.")
    alpha: float = _f(16.0, "LoRA alpha (scaling = alpha / rank).")
    learning_rate: float = _f(2e-2, "AdamW learning rate of the adapter entries inside the mask.")
    epochs: int = _f(8, "Most passes over the domain's training set.")
    min_epochs: int = _f(2, "Passes made before training may stop early.")
    stop_recall: float = _f(
        0.96, "Training stops at a check (see checks_per_pass) once this share of the facts' own clozes, "
        "asked of the student (greedy), give the fact's value; 0: always make every pass.")
    checks_per_pass: int = _f(
        2, "Early-stopping checks per pass from min_epochs on, evenly spaced (1: only at the end of a pass).")
    focus: bool = _f(
        True, "After a check that does not stop training, train on the facts it missed (with as many of "
        "the others, rehearsed) instead of on everything.")
    incremental: bool = _f(
        True, "When the domain has a serving version, start from it and train on the records new since "
        "(with some of the others rehearsed) instead of on every record from a fresh adapter.")
    rehearse: float = _f(
        0.5, "In an incremental round, examples of already consolidated facts trained per example of a new "
        "one, and at least one per consolidated fact (0: none).")
    schedule: str = _f("cosine", "Learning-rate schedule over the planned steps: 'cosine' (down to a tenth) or 'constant'.")
    batch_size: int = _f(16, "Training examples per step.")
    share_start: bool = _f(
        True, "Run the prompt start that training questions share (chat template, system message) once "
        "per step without gradient, instead of in every row.")
    pass_slack: float = _f(
        1.15, "On a CPU, a step's rows run in passes of similar length, each padding to at most this "
        "multiple of its rows' own tokens (a replayed exemplar's long answer apart from short questions); "
        "0: one padded pass per step. GPUs always run one pass (padding costs them little, a pass a fixed cost).")
    step_tokens: int = _f(
        1024, "Most tokens (rows times the longest row) one forward/backward pass of a training step "
        "holds; a step with more runs in several passes whose gradients add up to the same step. Bounds "
        "the activation memory however long a domain's examples are (0: one pass per step).")
    kl_teacher: float = _f(0.5, "Weight of KL to the teacher (the model with the memory in context).")
    kl_replay: float = _f(1.0, "Weight of KL to the base model on replayed exemplars.")
    replay: int = _f(64, "Exemplars replayed per consolidation (0: none).")
    contexts: int = _f(
        1, "Cloze forms of each fact asked after a sentence of unrelated text (recall in context); each "
        "adds a teacher answer and a training example per fact (0: none; one written question still is).")
    min_locality: float = _f(0.95, "A candidate is promoted only if its locality on exemplars is at least this.")
    max_forgetting: float = _f(
        0.05, "...and if the recall (memory shut) of the facts already consolidated falls by at most this "
        "(1: never rejected for it).")
    seed: int = _f(0, "Seed for masks, shuffling and initialisation.")

    def __post_init__(self) -> None:
        if not 0 <= self.max_forgetting <= 1:
            raise ConfigError(f"consolidation.max_forgetting must be in [0, 1], got {self.max_forgetting}")
        if not 0 < self.density <= 1:
            raise ConfigError(f"consolidation.density must be in (0, 1], got {self.density}")
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 1 or self.min_new_records < 1:
            raise ConfigError("consolidation.rank, epochs, batch_size and min_new_records must be >= 1")
        if self.learning_rate <= 0 or self.kl_teacher < 0 or self.kl_replay < 0 or self.replay < 0 or self.contexts < 0 \
                or self.rehearse < 0:
            raise ConfigError("consolidation.learning_rate must be > 0; kl_teacher, kl_replay, replay, contexts, "
                              "rehearse >= 0")
        if not 0 <= self.min_locality <= 1:
            raise ConfigError("consolidation.min_locality must be in [0, 1]")
        if not 0 <= self.stop_recall <= 1 or self.min_epochs < 1 or self.checks_per_pass < 1:
            raise ConfigError("consolidation.stop_recall must be in [0, 1]; min_epochs and checks_per_pass >= 1")
        if self.step_tokens < 0:
            raise ConfigError(f"consolidation.step_tokens must be 0 or positive, got {self.step_tokens}")
        if self.pass_slack != 0 and self.pass_slack < 1:
            raise ConfigError(f"consolidation.pass_slack must be 0 or at least 1, got {self.pass_slack}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"consolidation.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        parse_duration(self.min_interval, where="consolidation.min_interval")


def parse_duration(text: str, *, where: str = "duration") -> float:
    """'90s', '30m', '6h', '2d' (or a bare number of seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        value = -1.0
    if value < 0:
        raise ConfigError(f"{where}: {text!r} is not a duration; write e.g. '30m', '6h' or '2d'")
    return value


@dataclass
class MemoryConfig:
    uri: str = _f("", "Milvus only: a local file (milvus-lite) or a server URL like http://host:19530 "
                  "(default: <kb>/memory/milvus.db).")
    index: str = _f("auto", "Dense index: 'flat' (exact), 'hnsw', 'ivf', or 'auto' (exact until "
                    "approximate_above records, then HNSW).")
    approximate_above: int = _f(100_000, "With index = 'auto', records above which an approximate index is used.")
    lock_timeout: float = _f(30.0, "Seconds a writer waits for another writer before giving up.")

    def __post_init__(self) -> None:
        if self.index not in ("auto", "flat", "hnsw", "ivf"):
            raise ConfigError(f"memory.index must be 'auto', 'flat', 'hnsw' or 'ivf', got {self.index!r}")
        if self.approximate_above < 1 or self.lock_timeout < 0:
            raise ConfigError("memory.approximate_above must be >= 1 and memory.lock_timeout >= 0")


ENGINES = ("local", "ray")


@dataclass
class ComputeConfig:
    engine: str = _f("local", "Where ingest and consolidation run: 'local' (this process) or 'ray' (a Ray "
                     "cluster; pip install 'kupdate[ray]'). Each command's --engine wins over this.")
    address: str = _f("auto", "Ray cluster to join: 'auto' ($RAY_ADDRESS, else the cluster started on this "
                      "machine, else a new local one), 'local' (always a new one), or 'host:6379' / "
                      "'ray://host:10001'. $RAY_ADDRESS wins over this.")
    workers: int = _f(0, "Ray ingest: workers that load, chunk and embed at once, one embedder each "
                      "(0: one per GPU of the cluster, else 2).")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"compute.engine must be 'local' or 'ray', got {self.engine!r}")
        if self.workers < 0:
            raise ConfigError(f"compute.workers must be >= 0, got {self.workers}")
        if not self.address.strip():
            raise ConfigError("compute.address is empty; write 'auto' or a Ray address like 'host:6379'")


@dataclass
class Config:
    format_version: int = _f(KB_FORMAT_VERSION, "On-disk format of this knowledge base.")
    model: str = _f(DEFAULT_MODEL, "LLM: the embedded default, a Hugging Face id or a local folder.")
    embedder: str = _f(DEFAULT_EMBEDDER, "Embedder: the embedded default, 'hashing', an HF id or a folder.")
    device: str = _f("auto", "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'.")
    backend: str = _f("faiss", "Memory backend: 'faiss' (embedded, default) or 'milvus' (scale-out).")
    default_domain: str = _f("default", "Domain of ingested records when none is given.")
    language: str = _f("en", "Language of questions and documents (stopwords, stems, sentences): 'en'.")
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    freshness: FreshnessConfig = field(default_factory=FreshnessConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.backend not in ("faiss", "milvus"):
            raise ConfigError(f"backend must be 'faiss' or 'milvus', got {self.backend!r}")
        from kupdate.language import get_language

        get_language(self.language)  # an unknown language is a ConfigError naming the known ones
        if self.format_version > KB_FORMAT_VERSION:
            raise ConfigError(
                f"knowledge base format {self.format_version} is newer than this kupdate supports "
                f"({KB_FORMAT_VERSION}); upgrade kupdate"
            )


# Always written out: a KB keeps the models it was built with even if the defaults change.
PINNED = ("format_version", "model", "embedder")
ENV_OVERRIDES = {"model": "KUPDATE_MODEL", "embedder": "KUPDATE_EMBEDDER", "device": "KUPDATE_DEVICE"}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        sub = known[key].type
        sub_cls = globals().get(sub) if isinstance(sub, str) else sub
        if is_dataclass(sub_cls):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build(sub_cls, value, f"{where} [{key}]")
        else:
            kwargs[key] = _check_type(known[key], value, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a wrong type surfacing in __post_init__ comparisons
        raise ConfigError(f"{where}: {exc}") from None


def _check_type(f: Any, value: Any, where: str) -> Any:
    expected = f.type if not isinstance(f.type, str) else f.type.split(" | ")[0]
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}.get(str(expected), ())
    if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        raise ConfigError(f"{where}: {f.name} must be {expected}, got {value!r}")
    return float(value) if expected == "float" else value


def load_config(kb: Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read `<kb>/kupdate.toml`, then apply environment and explicit overrides (flags)."""
    path = kb / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file") from None
    for key, env in ENV_OVERRIDES.items():
        if os.environ.get(env):
            data[key] = os.environ[env]
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return _build(Config, data, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_config(config: Config) -> str:
    """TOML text for `config`: values that differ from the defaults are set, the rest are shown
    commented out (so a KB picks up improved defaults of later versions), each with its help."""
    lines: list[str] = ["# kupdate knowledge base configuration. Unknown keys are an error.", ""]
    _dump_table(config, Config(), lines)
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            lines += ["", f"[{f.name}]"]
            _dump_table(value, type(value)(), lines)
    return "\n".join(lines) + "\n"


def _dump_table(table: Any, default: Any, lines: list[str]) -> None:
    for f in fields(table):
        value = getattr(table, f.name)
        if is_dataclass(value):
            continue
        lines.append(f"# {f.metadata['help']}")
        pinned = f.name in PINNED or value != getattr(default, f.name)
        text = f"{f.name} = {_toml_value(value)}" if value is not None else f"{f.name} ="
        lines.append(text if pinned and value is not None else f"# {text}")
