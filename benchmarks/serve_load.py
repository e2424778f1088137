"""Load on `kupdate serve`: 8 concurrent OpenAI-style clients for 60 s, ingest under load, then the
same questions one at a time.

    python benchmarks/serve_load.py                      # default models, examples/docs, 8 clients x 60 s
    python benchmarks/serve_load.py --kb ./kb --clients 4 --seconds 30 --out /tmp/serve

Builds a KB (the default models) from examples/docs unless --kb names one, starts `kupdate serve`
as a subprocess on a free 127.0.0.1 port (local addresses only), warms up, then:
1. concurrent: `--clients` threads post chat completions of examples/questions.jsonl in turn for
   `--seconds`; meanwhile one client ingests a new record every `--ingest-every` seconds
   (at most `--ingests`), and every acknowledged record must be found by /v1/search afterwards;
2. sequential: one client asks the same questions one at a time for `--sequential-seconds`.
The server micro-batches answers (at most `max_batch` per model pass, docs/serve.md), which is
what lets 8 clients get more than one client's throughput.
Any non-200 answer is an error. Reports p50/p95 latency and answers/s of both phases and their
ratio, and whether each question got the same answer both ways. Writes <out>/results.json,
<out>/table.md and <out>/serve_load.png (default benchmarks/results/serve_load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never anything else: this script only loads a server on this machine


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--kb", default=None, help="existing KB to serve (default: build one from examples/docs)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (1-64)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the concurrent phase (<= 600)")
    p.add_argument("--sequential-seconds", type=float, default=30.0, help="length of the sequential phase (<= 600)")
    p.add_argument("--ingest-every", type=float, default=10.0, help="seconds between ingests under load")
    p.add_argument("--ingests", type=int, default=5, help="most records ingested under load")
    p.add_argument("--warmup", type=int, default=2, help="untimed chats first")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load"))
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 0 < args.seconds <= 600 and 0 < args.sequential_seconds <= 600):
        p.error("--clients must be 1-64 and each phase 0-600 s")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build_kb(folder: Path) -> Path:
    from kupdate import KnowledgeBase

    with KnowledgeBase.init(folder) as kb:
        kb.ingest([ROOT / "examples" / "docs"])
    return folder


def start_server(kb: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kupdate.cli.main", "serve", "--kb", str(kb), "--host", HOST,
                             "--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"kupdate serve did not start; see {log}")


def chat(client, url: str, model: str, question: str) -> dict:
    t0 = time.perf_counter()
    r = client.post(f"{url}/v1/chat/completions", timeout=300,
                    json={"model": model, "messages": [{"role": "user", "content": question}]})
    ms = (time.perf_counter() - t0) * 1000
    ok = r.status_code == 200
    return {"question": question, "status": r.status_code, "ms": round(ms, 1), "end": time.perf_counter(),
            "answer": r.json()["choices"][0]["message"]["content"] if ok else r.text[:300],
            "server_ms": r.json().get("kupdate", {}).get("timings_ms") if ok else None}


def concurrent_phase(url: str, model: str, questions: list[str], args: argparse.Namespace) -> tuple[list, list]:
    import httpx

    rows: list[dict] = []
    acked: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop = start + args.seconds

    def client(i: int) -> None:
        with httpx.Client() as c:
            n = i
            while time.perf_counter() < stop:
                row = chat(c, url, model, questions[n % len(questions)])
                with lock:
                    rows.append(row)
                n += 1

    def ingester() -> None:
        with httpx.Client() as c:
            for k in range(args.ingests):
                wake = start + (k + 1) * args.ingest_every
                if wake >= stop:
                    break
                time.sleep(max(0.0, wake - time.perf_counter()))
                text = f"Load test note {k}: the Harrowgate depot {k} opened on day {k + 1} of the run."
                t0 = time.perf_counter()
                r = c.post(f"{url}/v1/ingest", timeout=300,
                           json={"text": text, "date": "2026-01-01", "domain": "loadtest"})
                acked.append({"text": text, "status": r.status_code, "ms": round((time.perf_counter() - t0) * 1000, 1),
                              "added": r.json().get("added") if r.status_code == 200 else None})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=ingester))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for row in rows:
        row["end"] -= start
    return rows, acked


def sequential_phase(url: str, model: str, questions: list[str], seconds: float) -> list[dict]:
    import httpx

    rows = []
    start = time.perf_counter()
    with httpx.Client() as c:
        n = 0
        while time.perf_counter() < start + seconds:
            rows.append(chat(c, url, model, questions[n % len(questions)]))
            n += 1
    for row in rows:
        row["end"] -= start
    return rows


def stats(rows: list[dict], seconds: float) -> dict:
    from kupdate.metrics import percentile

    ms = [r["ms"] for r in rows if r["status"] == 200]
    wall = max((r["end"] for r in rows), default=seconds)
    return {"answers": len(ms), "errors": sum(r["status"] != 200 for r in rows),
            "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
            "answers_per_s": round(len(ms) / wall, 3) if wall else 0.0, "wall_s": round(wall, 1)}


def table(summary: dict, config: dict) -> str:
    c, s = summary["concurrent"], summary["sequential"]
    lines = [f"`kupdate serve` on {config['model']} ({config['device']}, {config['cpus']} CPUs): "
             f"{config['clients']} concurrent clients for {config['seconds']:g} s, then one client for "
             f"{config['sequential_seconds']:g} s. Answers micro-batched: at most {config['max_batch']} "
             f"per model pass, {config['batch_window_ms']:g} ms collection window.", "",
             "| phase | answers | errors | p50 ms | p95 ms | answers/s |", "|---|---|---|---|---|---|"]
    for name, x in (("concurrent", c), ("sequential", s)):
        lines.append(f"| {name} | {x['answers']} | {x['errors']} | {x['p50_ms']:.0f} | {x['p95_ms']:.0f} "
                     f"| {x['answers_per_s']:.2f} |")
    i = summary["ingest"]
    lines += ["", f"Throughput ratio concurrent/sequential: **{summary['throughput_ratio']:.2f}**. "
              f"Ingest under load: {i['acknowledged']}/{i['sent']} acknowledged, {i['searchable']} found "
              f"by /v1/search afterwards, p50 {i['p50_ms']:.0f} ms. Questions answered the same way in both "
              f"phases: {summary['same_answers']}/{summary['questions_compared']}."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], seq: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, data in (("concurrent", rows), ("sequential", seq)):
        ms = sorted(r["ms"] for r in data if r["status"] == 200)
        if ms:
            a.plot(ms, [(k + 1) / len(ms) for k in range(len(ms))], label=name)
        ends = sorted(r["end"] for r in data if r["status"] == 200)
        b.plot(ends, range(1, len(ends) + 1), label=name)
    a.set(xlabel="latency (ms)", ylabel="share of answers", title="latency CDF")
    b.set(xlabel="seconds into the phase", ylabel="answers so far", title="throughput")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import httpx

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    questions = [json.loads(line)["question"] for line in (ROOT / "examples" / "questions.jsonl").open()]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        kb = Path(args.kb) if args.kb else build_kb(Path(tmp) / "kb")
        build_s = time.perf_counter() - t0
        proc, url = start_server(kb, out / "server.log")
        try:
            model = httpx.get(f"{url}/v1/models").json()["data"][0]
            status = httpx.get(f"{url}/v1/status").json()
            with httpx.Client() as c:
                for q in questions[: args.warmup]:
                    chat(c, url, model["id"], q)
            rows, acked = concurrent_phase(url, model["id"], questions, args)
            searchable = sum(any(m["text"] == a["text"] for m in httpx.get(
                f"{url}/v1/search", params={"q": a["text"], "k": 10}, timeout=300).json()) for a in acked)
            seq = sequential_phase(url, model["id"], questions, args.sequential_seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    from kupdate.metrics import percentile

    conc, sequential = stats(rows, args.seconds), stats(seq, args.sequential_seconds)
    first = {r["question"]: r["answer"] for r in seq if r["status"] == 200}
    seen = {r["question"]: r["answer"] for r in rows if r["status"] == 200 and r["question"] in first}
    ok_ingests = [a for a in acked if a["status"] == 200]
    summary = {"concurrent": conc, "sequential": sequential,
               "throughput_ratio": round(conc["answers_per_s"] / sequential["answers_per_s"], 3)
               if sequential["answers_per_s"] else None,
               "ingest": {"sent": len(acked), "acknowledged": len(ok_ingests), "searchable": searchable,
                          "p50_ms": round(percentile([a["ms"] for a in ok_ingests], 50), 1)},
               "same_answers": sum(seen[q] == first[q] for q in seen), "questions_compared": len(seen)}
    from kupdate.serve.settings import ServeSettings

    config = {"clients": args.clients, "seconds": args.seconds, "sequential_seconds": args.sequential_seconds,
              "ingest_every": args.ingest_every, "ingests": args.ingests, "warmup": args.warmup,
              "model": status["model"], "embedder": status["embedder"], "device": status["device"],
              "records": status["knowledge"], "kb_build_s": round(build_s, 1), "cpus": os.cpu_count(),
              # the server's micro-batching of answers (its ServeSettings defaults; docs/serve.md)
              "max_batch": ServeSettings.max_batch, "batch_window_ms": ServeSettings.batch_window_ms,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "python": platform.python_version(), "platform": platform.platform()}
    data = {"config": config, "summary": summary, "concurrent": rows, "sequential": seq, "ingests": acked}
    (out / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    text = table(summary, config)
    (out / "table.md").write_text(text, encoding="utf-8")
    plot(rows, seq, out / "serve_load.png")
    print(text)
    print(f"results in {out}", file=sys.stderr)
    errors = conc["errors"] + sequential["errors"] + (len(acked) - len(ok_ingests)) + (len(ok_ingests) - searchable)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
