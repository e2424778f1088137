"""Memory benchmark: ingest overhead, dense search latency and recall per index type, disk per record.

    python benchmarks/memory_bench.py                          # 10k, 100k, 1M vectors (tens of minutes)
    python benchmarks/memory_bench.py --sizes 10000,100000 --queries 500
    python benchmarks/memory_bench.py --quick --embedder hashing   # seconds, for CI

(a) ingest: `kupdate.ingest.pipeline.ingest` of synthetic documents into a real store, against
    the embedder's own `encode` of the same chunks (ratio = ingest time / encode time).
(b) search: single-query top-10 latency (p50/p95) and recall@10 against exact search, for the
    flat, HNSW and IVF indexes `memory_store` builds, on seeded clustered unit vectors.
(c) storage: bytes on disk per record (SQLite + index files) for the ingested text records.

Writes <out>/results.json (results, config, environment), <out>/table.md and <out>/memory_bench.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("flat", "hnsw", "ivf")
K = 10
WARMUP = 50  # queries run before timing starts (page in the index, settle thread pools)


# -- data ----------------------------------------------------------------------------------------


def clustered(n: int, dim: int, seed: int, *, stream: int = 0, centres: int = 1000, intrinsic: int = 32,
              spread: float = 1.2, noise: float = 0.8, chunk: int = 100_000) -> np.ndarray:
    """n unit vectors from a seeded Gaussian mixture: each of `centres` components varies mostly
    in its own `intrinsic`-dim subspace (`spread`), plus isotropic `noise`. Like sentence
    embeddings, the data has topics and a low intrinsic dimension, so neighbours and recall mean
    something, as they would not in uniform noise. The defaults make a query's 10th neighbour
    sit at cosine ~0.4 at 50k vectors (MiniLM neighbours of related sentences: ~0.4-0.7).

    `seed` fixes the mixture, `stream` the draws from it (queries: another stream, same mixture).
    Rows come in seeded chunks, so a smaller n is a prefix of a larger one.
    """
    mixture = np.random.default_rng(seed)
    # Centres of norm ~1; z @ basis (the spread within a component) also has norm ~1.
    mu = mixture.standard_normal((centres, dim), dtype=np.float32) / np.sqrt(dim)
    bases = mixture.standard_normal((centres, intrinsic, dim), dtype=np.float32) / np.sqrt(dim * intrinsic)
    out = np.empty((n, dim), dtype=np.float32)
    for i, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, stream, i])
        m = min(chunk, n - start)
        label = rng.integers(0, centres, m)
        z = rng.standard_normal((m, intrinsic), dtype=np.float32)
        x = mu[label] + noise / np.sqrt(dim) * rng.standard_normal((m, dim), dtype=np.float32)
        order = np.argsort(label, kind="stable")  # rows grouped by component: one matmul each
        bounds = np.searchsorted(label[order], np.arange(centres + 1))
        within = np.empty((m, dim), dtype=np.float32)
        for c in range(centres):
            rows = order[bounds[c] : bounds[c + 1]]
            within[rows] = z[rows] @ bases[c]
        x += spread * within
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


_SUBJECTS = ["Brindlemoor Robotics", "Morrowgate Ltd", "the Ellery Trust", "Quillon Labs", "Harrow Aerospace",
             "the city council", "Northvane Energy", "Sableford Bank", "the research group", "Tamsin Oakley"]
_VERBS = ["opened", "announced", "acquired", "moved", "closed", "launched", "expanded", "reported", "hired",
          "sold", "renamed", "funded"]
_OBJECTS = ["a new office", "its harvest drone line", "a water plant", "two subsidiaries", "the east campus",
            "a battery factory", "a research lab", "its headquarters", "a training programme", "a port terminal"]
_PLACES = ["Port Ellery", "Lindqvist", "Arbor Falls", "New Calder", "Hesketh", "Marrow Bay", "Oldtown", "Vireo"]


def sentences(n: int, seed: int) -> list[str]:
    """n seeded news-like sentences (numbers and names vary, so chunks are distinct)."""
    rng = random.Random(seed)
    return [f"In {rng.randint(1990, 2025)}, {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
            f"{rng.choice(_OBJECTS)} in {rng.choice(_PLACES)} for {rng.randint(2, 900)} million, "
            f"according to report {rng.randint(100, 99999)}." for _ in range(n)]


def write_corpus(folder: Path, texts: list[str], per_doc: int = 100) -> None:
    """Documents of `per_doc` sentences in paragraphs of five."""
    folder.mkdir(parents=True, exist_ok=True)
    for d, start in enumerate(range(0, len(texts), per_doc)):
        doc = texts[start : start + per_doc]
        paragraphs = [" ".join(doc[i : i + 5]) for i in range(0, len(doc), 5)]
        (folder / f"doc{d:04d}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")


# -- metrics (pure) ------------------------------------------------------------------------------


def recall_at_k(found: list[np.ndarray], truth: np.ndarray, k: int = K) -> float:
    """Mean fraction of the exact top-k found in each result list."""
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return round(float(p50), 4), round(float(p95), 4)


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- (a) ingest and (c) storage ------------------------------------------------------------------


class TimedEmbedder:
    """Passes calls through to an embedder, adding up the time spent in `encode`."""

    def __init__(self, embedder) -> None:
        self.inner, self.seconds = embedder, 0.0
        self.name, self.dim = embedder.name, embedder.dim

    def encode(self, texts, **kw):
        start = time.perf_counter()
        try:
            return self.inner.encode(texts, **kw)
        finally:
            self.seconds += time.perf_counter() - start

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def bench_ingest(spec: str, n_sentences: int, seed: int, work: Path) -> dict:
    """Ingest a synthetic corpus, then encode the same chunks directly; also bytes per record.

    The ratio compares two runs on a machine others may share; the encode time measured inside
    the ingest run itself gives the pipeline's own overhead independently of that noise."""
    from kupdate.config import Config
    from kupdate.ingest.pipeline import ingest
    from kupdate.models import load_embedder
    from memory_store import open_store

    texts = sentences(n_sentences, seed)
    write_corpus(work / "docs", texts)
    embedder = load_embedder(spec, device="cpu")
    embedder.encode(texts[:64], batch_size=64)  # warm-up: weights paged in, thread pools started
    config = Config(embedder=spec)
    timed = TimedEmbedder(embedder)
    with open_store(work / "memory", dim=embedder.dim, embedder=spec) as store:
        start = time.perf_counter()
        report = ingest(store, timed, [work / "docs"], config)
        ingest_s = time.perf_counter() - start
        chunks = [r.text for r in store.records(kind="knowledge")]
    batch = config.ingest.batch_size
    start = time.perf_counter()
    embedder.encode(chunks, batch_size=batch)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(chunks), batch):  # the same calls ingest makes, for the overhead alone
        embedder.encode(chunks[i : i + batch], batch_size=batch)
    batched_s = time.perf_counter() - start
    files = {p.name: p.stat().st_size for p in (work / "memory").iterdir() if p.is_file()}
    on_disk = sum(size for name, size in files.items() if name != "write.lock")
    return {
        "embedder": spec, "sentences": n_sentences, "chunks": len(chunks), "added": report.added,
        "ingest_s": round(ingest_s, 3), "encode_s": round(encode_s, 3), "encode_batched_s": round(batched_s, 3),
        "ratio": round(ingest_s / encode_s, 3), "ratio_vs_batched": round(ingest_s / batched_s, 3),
        "chunks_per_s": round(len(chunks) / ingest_s, 1), "encode_within_ingest_s": round(timed.seconds, 3),
        "pipeline_overhead": round(ingest_s / timed.seconds - 1, 4),
        "storage": {"records": len(chunks), "bytes": on_disk, "bytes_per_record": round(on_disk / len(chunks)),
                    "text_bytes_per_record": round(sum(len(c.encode()) for c in chunks) / len(chunks)),
                    "files": files},
    }


# -- (b) search ----------------------------------------------------------------------------------


def array_source(base: np.ndarray, batch: int = 50_000):
    """A memory_store VectorSource over an array, with ids 1..n like SQLite's."""

    def source(after: int):
        for start in range(after, len(base), batch):
            stop = min(start + batch, len(base))
            yield np.arange(start + 1, stop + 1, dtype=np.int64), base[start:stop]

    return source


def time_queries(search, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    for q in queries[:WARMUP]:
        search(q)
    seconds, found = [], []
    for q in queries:
        start = time.perf_counter()
        ids = search(q)
        seconds.append(time.perf_counter() - start)
        found.append(ids)
    return seconds, found


def bench_size(base: np.ndarray, queries: np.ndarray, work: Path, sweep: dict[str, list[int]]) -> list[dict]:
    """Each index type at len(base) vectors: build, size, p50/p95 single-query latency, recall@10."""
    import faiss

    from memory_store.faiss_index import DenseIndex
    from memory_store.index_types import search_params

    n, dim = base.shape
    rows, truth, threads = [], None, faiss.omp_get_max_threads()
    for kind in TYPES:
        start = time.perf_counter()
        index = DenseIndex.build(work / f"{kind}.faiss", dim, kind, n, array_source(base))
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        index.save(force=True)
        save_s = time.perf_counter() - start
        size = index.path.stat().st_size
        index.path.unlink()
        if truth is None:  # flat is exact: its batched answer is the ground truth
            truth = index.cpu.search(queries, K)[1]
        seconds, found = time_queries(lambda q, index=index: index.search(q, K)[1], queries)
        p50, p95 = percentiles_ms(seconds)
        row = {"type": kind, "n": n, "setting": "default", "build_s": round(build_s, 2), "save_s": round(save_s, 2),
               "index_bytes_per_vector": round(size / n, 1), "p50_ms": p50, "p95_ms": p95,
               "recall@10": round(recall_at_k(found, truth), 4), "maxrss_mb": _maxrss_mb()}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        faiss.omp_set_num_threads(1)  # as DenseIndex.search does for one query
        for value in sweep.get(kind, []):  # the same index with another efSearch / nprobe
            if kind == "hnsw":
                params = search_params(index.cpu, "hnsw", K, n, False)
                params.efSearch = value
            else:
                params = faiss.SearchParametersIVF(nprobe=value)
            seconds, found = time_queries(
                lambda q, index=index, params=params: index.cpu.search(q.reshape(1, -1), K, params=params)[1][0],
                queries)
            p50, p95 = percentiles_ms(seconds)
            name = "efSearch" if kind == "hnsw" else "nprobe"
            rows.append({**row, "setting": f"{name}={value}", "p50_ms": p50, "p95_ms": p95,
                         "recall@10": round(recall_at_k(found, truth), 4)})
        faiss.omp_set_num_threads(threads)
        del index
    return rows


def bench_milvus(base: np.ndarray, queries: np.ndarray, work: Path) -> dict:
    """The Milvus backend (milvus-lite, HNSW) through the real store at len(base) vectors."""
    import faiss

    from memory_store import Record, open_store

    n, dim = base.shape
    exact = faiss.IndexFlatIP(dim)
    exact.add(base)
    truth = exact.search(queries, K)[1] + 1  # SQLite ids start at 1
    start = time.perf_counter()
    with open_store(work / "milvus-store", dim=dim, embedder="bench", backend="milvus", index="hnsw") as store:
        for lo in range(0, n, 10_000):
            hi = min(lo + 10_000, n)
            store.add([Record(text=f"record {i}", source="bench") for i in range(lo, hi)], base[lo:hi])
        build_s = time.perf_counter() - start
        seconds, found = time_queries(
            lambda q: np.array([h.record.id for h in store.search(q, k=K)], dtype=np.int64), queries)
    p50, p95 = percentiles_ms(seconds)
    row = {"type": "milvus-lite hnsw (store)", "n": n, "setting": "default", "build_s": round(build_s, 2),
           "p50_ms": p50, "p95_ms": p95, "recall@10": round(recall_at_k(found, truth), 4)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- report --------------------------------------------------------------------------------------


def to_markdown(results: dict) -> str:
    ing = results["ingest"]
    st = ing["storage"]
    lines = [
        "## Ingest vs raw encode", "",
        f"{ing['chunks']} chunks ({ing['sentences']} sentences) with `{ing['embedder']}`: ingest "
        f"{ing['ingest_s']} s, encode {ing['encode_s']} s in one call ({ing['encode_batched_s']} s in "
        f"ingest's batches); **ratio {ing['ratio']}** ({ing['ratio_vs_batched']} vs the batched encode). "
        f"Within the ingest run, encoding took {ing['encode_within_ingest_s']} s: the pipeline adds "
        f"{100 * ing['pipeline_overhead']:.1f}% on top of it.", "",
        "## Storage", "",
        f"**{st['bytes_per_record']} bytes per record** on disk (SQLite + index files; "
        f"{st['text_bytes_per_record']} bytes of text per record, {st['records']} records).", "",
        "## Search (single query, k=10)", "",
        "| type | vectors | setting | p50 ms | p95 ms | recall@10 | build s | save s | index bytes/vector |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["search"]:
        lines.append(f"| {r['type']} | {r['n']:,} | {r['setting']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                     f"{r['recall@10']:.4f} | {r['build_s']} | {r.get('save_s', '-')} | {r.get('index_bytes_per_vector', '-')} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in dict.fromkeys(r["type"] for r in results["search"]):  # flat, hnsw, ivf, then Milvus
        rows = [r for r in results["search"] if r["type"] == kind and r["setting"] == "default"]
        sizes = [r["n"] for r in rows]
        left.plot(sizes, [r["p50_ms"] for r in rows], marker="o", label=kind)
        right.plot(sizes, [r["recall@10"] for r in rows], marker="o", label=kind)
    left.set(xscale="log", yscale="log", xlabel="vectors", ylabel="p50 latency (ms)", title="search latency")
    right.set(xscale="log", xlabel="vectors", ylabel="recall@10", title="recall vs exact", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment() -> dict:
    import faiss

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": _cpu_name(), "faiss": faiss.__version__, "numpy": np.__version__,
            "faiss_threads": faiss.omp_get_max_threads()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of vectors")
    p.add_argument("--queries", type=int, default=1000, help="queries per size (after warm-up)")
    p.add_argument("--dim", type=int, default=384, help="vector width (MiniLM: 384)")
    p.add_argument("--sentences", type=int, default=4000, help="synthetic sentences to ingest")
    p.add_argument("--embedder", default="all-minilm-l6-v2", help="embedder for the ingest part")
    p.add_argument("--ef", default="64,96,128", help="extra HNSW efSearch values to measure")
    p.add_argument("--nprobe", default="8,16,64", help="extra IVF nprobe values to measure")
    p.add_argument("--milvus-sizes", default="100000",
                   help="sizes at which to measure the Milvus backend (milvus-lite); '' to skip")
    p.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default results/memory_bench/<time>)")
    p.add_argument("--quick", action="store_true", help="small sizes and counts (CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.sentences, args.ef, args.nprobe = "1000,3000", 60, 150, "32", "8"
        args.milvus_sizes = ""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out or ROOT / "results" / "memory_bench" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    sweep = {"hnsw": [int(v) for v in args.ef.split(",") if v],
             "ivf": [int(v) for v in args.nprobe.split(",") if v]}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ingest = bench_ingest(args.embedder, args.sentences, args.seed, Path(tmp) / "ingest")
        print(json.dumps({k: v for k, v in ingest.items() if k != "storage"}), file=sys.stderr, flush=True)
        base = clustered(sizes[-1], args.dim, args.seed)
        queries = clustered(args.queries, args.dim, args.seed, stream=1)  # same mixture, fresh draws
        search = []
        for n in sizes:
            search += bench_size(base[:n], queries, Path(tmp), sweep)
        milvus_sizes = sorted(int(s) for s in args.milvus_sizes.split(",") if s)
        if milvus_sizes:
            base = clustered(max(sizes[-1], milvus_sizes[-1]), args.dim, args.seed)
        search += [bench_milvus(base[:n], queries, Path(tmp) / f"m{n}") for n in milvus_sizes]
    config = {**vars(args), "k": K, "warmup_queries": WARMUP}
    results = {"config": config, "environment": environment(), "wall_seconds": round(time.perf_counter() - start, 1),
               "ingest": ingest, "search": search}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(to_markdown(results))
    plot(results, out / "memory_bench.png")
    print(to_markdown(results))
    print(f"results in {out} ({results['wall_seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
