"""The stale-vs-fresh benchmark suite: loaders, the synthetic stream, the protocol, resume, reports.

Fast tests use the tiny Llama and the hashing embedder (`tiny_kb`); the `integration` test runs
benchmarks/stale_fresh.py with the real default models on 20 CounterFact records and a small stream.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED_DATA, write

from kupdate.bench import (
    Checkpoint,
    EditCase,
    load_counterfact,
    load_qaedit,
    load_zsre,
    run_stream,
    stream_from_cases,
    synthetic_stream,
)
from kupdate.bench import modes as bench_modes
from kupdate.bench.report import table
from kupdate.bench.teacher import token_accuracy
from kupdate.errors import InputError, KupdateError
from kupdate.text import hits

# -- loaders ---------------------------------------------------------------------------------------

CF = [{"case_id": 7, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
       "ground_truth": "French", "rephrase_prompt": "Danielle Darrieux grew up speaking",
       "locality_prompt": "Michel Rocard is a native speaker of"}]
QA = [{"id": 1104, "prompt": "who has the most 70 point games in nba history?", "target": "Wilt Chamberlain *",
       "rephrase": "Which NBA player scored 70 points most often?",
       "locality": [{"loc": "who is the saint that protects police officers", "loc_ans": "Michael"}]}]
ZSRE = [{"src": "What university did Watts Humphrey attend?", "alt": "University of Michigan",
         "answers": ["Illinois Institute of Technology"], "rephrase": "Which university did Watts Humphrey go to?",
         "loc": "nq question: who played desmond doss father in hacksaw ridge", "loc_ans": "Hugo Weaving"}]


def _json(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_loaders_read_each_format_into_edit_cases(tmp_path):
    cf = load_counterfact(_json(tmp_path, "cf.json", CF))[0]
    assert (cf.statement, cf.fresh, cf.stale, cf.previous, cf.key) == (
        "The mother tongue of Danielle Darrieux is English.", "English", "French", ["French"], "cf-7")
    qa = load_qaedit(_json(tmp_path, "qa.json", QA))[0]
    assert qa.fresh == "Wilt Chamberlain" and qa.stale is None and qa.previous == []  # the " *" marker is dropped
    assert qa.statement == "Who has the most 70 point games in nba history? Wilt Chamberlain."
    assert qa.locality_prompt == "who is the saint that protects police officers"
    z = load_zsre(_json(tmp_path, "zsre.json", ZSRE))[0]
    assert (z.prompt, z.fresh, z.stale) == (ZSRE[0]["src"], "University of Michigan", "Illinois Institute of Technology")
    assert z.locality_prompt == "who played desmond doss father in hacksaw ridge"  # "nq question:" stripped
    assert z.statement == "What university did Watts Humphrey attend? University of Michigan."


def test_loader_takes_the_first_n_records(tmp_path):
    path = _json(tmp_path, "cf.json", [{**CF[0], "case_id": i} for i in range(5)])
    assert [c.key for c in load_counterfact(path, 2)] == ["cf-0", "cf-1"]


@pytest.mark.parametrize("loader, data, needle", [
    (load_counterfact, [CF[0], {"prompt": "x"}], "record 1 lacks prompt/target_new"),
    (load_qaedit, [{"prompt": "who?"}], "record 0 lacks prompt/target"),
    (load_zsre, [ZSRE[0], ZSRE[0], {"src": "q", "alt": ""}], "record 2 has an empty"),
    (load_zsre, {"src": "not a list"}, "expected a JSON list"),
])
def test_bad_records_name_the_file_and_record(tmp_path, loader, data, needle):
    path = _json(tmp_path, "bad.json", data)
    with pytest.raises(InputError, match=needle) as err:
        loader(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_file_is_one_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read QAEdit"):
        load_qaedit(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    with pytest.raises(InputError, match="broken.json"):
        load_counterfact(tmp_path / "broken.json")


# -- synthetic stream --------------------------------------------------------------------------------

def test_synthetic_stream_is_seeded():
    assert synthetic_stream(30, rounds=3, seed=4) == synthetic_stream(30, rounds=3, seed=4)
    assert synthetic_stream(30, rounds=3, seed=4) != synthetic_stream(30, rounds=3, seed=5)


def test_synthetic_fresh_values_differ_from_every_stale_one_and_dates_increase():
    stream = synthetic_stream(60, rounds=4, seed=1)
    dates = [r.date for r in stream.rounds]
    assert dates == sorted(dates) and len(set(dates)) == 4
    for rnd in stream.rounds:
        assert all(d["date"] == rnd.date for d in rnd.documents)
        for case in rnd.cases:
            assert case.round == rnd.index and hits(case.statement, case.fresh)
            assert all(not hits(old, case.fresh) and not hits(case.fresh, old) for old in case.previous)
            assert case.stale == (case.previous[-1] if case.previous else None)
    final = stream.cases_at(3)
    assert len(final) == 60 and len({c.key for c in final}) == 60
    # Most facts changed (stale values compete in memory); a share never changed after round 0.
    assert 0.7 * 60 <= sum(bool(c.previous) for c in final) < 60
    # Every statement stays in the stream: the old values are still stated in earlier rounds.
    old_texts = " ".join(d["text"] for r in stream.rounds[:-1] for d in r.documents)
    assert all(hits(old_texts, c.stale) for c in final if c.stale)


def test_synthetic_documents_look_like_a_news_stream():
    stream = synthetic_stream(60, rounds=3, seed=0)
    profiles = stream.rounds[0].documents
    assert len(profiles) < 60  # several facts per profile
    assert len({d["source"] for r in stream.rounds for d in r.documents}) == sum(len(r.documents) for r in stream.rounds)
    case = stream.cases_at(2)[0]
    assert case.prompt.endswith("?") and case.rephrase != case.prompt and case.locality_prompt != case.prompt
    entity = case.key.split("/")[0]
    assert entity not in case.locality_prompt  # the neighbour is another organisation
    assert stream.controls and all(q not in case.prompt for q in stream.controls)


def test_synthetic_stream_scales_to_ten_thousand_updates():
    stream = synthetic_stream(10_000, rounds=3, seed=2)
    assert len(stream.cases_at(2)) == 10_000


def test_file_cases_split_into_prefix_rounds():
    cases = [EditCase(f"S{i} is X{i}.", f"S{i} is", f"X{i}") for i in range(5)]
    stream = stream_from_cases("toy", cases, rounds=2)
    assert [len(r.cases) for r in stream.rounds] == [3, 2]
    assert [c.round for c in stream.cases_at(1)] == [0, 0, 0, 1, 1]
    assert stream.updates_through(0) == 3 and stream.rounds[0].date < stream.rounds[1].date
    assert cases[3].round == 0 and cases[3].key == ""  # the caller's cases are not changed


# -- checkpoint ------------------------------------------------------------------------------------

def test_checkpoint_reads_back_and_ignores_a_cut_line(tmp_path):
    path = tmp_path / "ck.jsonl"
    ck = Checkpoint(path)
    ck.check_config({"n": 3, "modes": ("base",)})
    ck.add_answer("ds", "r0", "rag", "Q1?", {"answer": "A1", "ms": 5.0})
    ck.add_event("ds", "ingest", 0, seconds=1.5)
    with path.open("a") as f:
        f.write('{"type": "answer", "dataset": "ds", "stage": "r0", "mode": "rag", "question": "Q2?", "ans')
    again = Checkpoint(path)
    again.check_config({"n": 3, "modes": ["base"]})  # the same config, as read back from JSON
    assert again.answer("ds", "r0", "rag", "Q1?")["answer"] == "A1"
    assert again.answer("ds", "r0", "rag", "Q2?") is None
    assert again.event("ds", "ingest", 0)["seconds"] == 1.5
    again.add_answer("ds", "r0", "rag", "Q2?", {"answer": "A2", "ms": 1.0})  # starts on a line of its own
    assert Checkpoint(path).answer("ds", "r0", "rag", "Q2?")["answer"] == "A2"
    with pytest.raises(KupdateError, match="n: 3 -> 4"):
        Checkpoint(path).check_config({"n": 4, "modes": ["base"]})


# -- the protocol with the tiny model ----------------------------------------------------------------

def _count_generate(monkeypatch):
    """Count the questions generated for (by any mode), through kupdate.answering.decoding.generate."""
    import kupdate.answering.decoding

    calls = {"prompts": 0}
    real = kupdate.answering.decoding.generate

    def counting(llm, prompts, **kw):
        calls["prompts"] += len(prompts)
        return real(llm, prompts, **kw)

    monkeypatch.setattr(kupdate.answering.decoding, "generate", counting)
    monkeypatch.setattr("kupdate.answering.answer.generate", counting)
    monkeypatch.setattr("kupdate.answering.freshness.generate", counting)
    return calls


def _assert_rates(metrics):
    for mode, m in metrics.items():
        for name in ("fresh_recall", "stale_rate", "generalisation", "locality"):
            if name in m:
                r = m[name]
                assert 0 <= r["low"] <= r["value"] <= r["high"] <= 1, (mode, name, r)


def test_run_stream_scores_every_round_and_resumes_without_asking_again(tiny_kb, tmp_path, monkeypatch):
    stream = synthetic_stream(6, rounds=2, seed=0)
    ck_path = tmp_path / "out" / "checkpoint.jsonl"
    modes = ["base", "rag", "gated_rag"]
    result = run_stream(tiny_kb, stream, modes, checkpoint=Checkpoint(ck_path), workdir=tmp_path / "out",
                        batch_size=4, check_batch=2)
    assert result.n == 6 and result.rounds == 2 and list(result.metrics) == modes
    _assert_rates(result.metrics)
    assert result.metrics["base"]["locality"]["value"] == 1.0
    assert [p["updates"] for p in result.curve] == [6, stream.updates_through(1)]
    assert set(result.forgetting) == set(modes) and len(result.answers) == 6
    assert [r["round"] for r in result.ingest] == [0, 1] and result.ingest[0]["added"] > 0
    assert result.batch_check["base"]["n"] == 2 and result.batch_check["base"]["mismatches"] == []
    assert result.batch_check["rag"]["mismatches"] == []
    assert {"gate", "memories", "prompt", "rephrase"} <= set(result.answers[0]["gated_rag"])

    # Resume: everything is in the checkpoint, so nothing is generated again and the scores are equal.
    calls = _count_generate(monkeypatch)
    again = run_stream(tiny_kb, stream, modes, checkpoint=Checkpoint(ck_path), workdir=tmp_path / "out",
                       batch_size=4, check_batch=2)
    assert calls["prompts"] == 0
    assert again.metrics == result.metrics and again.ingest == result.ingest

    # Interrupted: the last three answers were lost; exactly those are asked again.
    lines = ck_path.read_text().splitlines()
    answers = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "answer"]
    keep = [line for i, line in enumerate(lines) if i not in answers[-3:]]
    ck_path.write_text("\n".join(keep) + "\n")
    run_stream(tiny_kb, stream, modes, checkpoint=Checkpoint(ck_path), workdir=tmp_path / "out",
               batch_size=4, check_batch=2)
    assert calls["prompts"] == 3


def test_batched_answers_equal_one_at_a_time(tiny_kb, tmp_path):
    tiny_kb.ingest([synthetic_stream(5, rounds=2).write_round(0, tmp_path)])
    questions = ["Who is the CEO of Apple?", "What is 6 times 7?", "The capital of Germany is",
                 "Where is Nokia headquartered in the north of Europe these days?"]
    for mode in ("base", "rag"):
        batched = [r.answer for r in bench_modes.answer_batch(tiny_kb, questions, mode)]
        assert batched == [bench_modes.ask_one(tiny_kb, q, mode).answer for q in questions], mode


def test_adapter_modes_need_consolidate(tiny_kb, tmp_path, monkeypatch):
    from kupdate import KnowledgeBase

    monkeypatch.delattr(KnowledgeBase, "consolidate", raising=False)
    with pytest.raises(KupdateError, match="KnowledgeBase.consolidate"):
        run_stream(tiny_kb, synthetic_stream(4, rounds=2), ["base", "adapter"], workdir=tmp_path)
    with pytest.raises(KupdateError, match="unknown mode 'lora'"):
        run_stream(tiny_kb, synthetic_stream(4, rounds=2), ["lora"], workdir=tmp_path)


def test_adapter_modes_consolidate_after_each_round(tiny_kb, tmp_path, monkeypatch):
    from kupdate import KnowledgeBase

    done = []

    class Report:
        def to_dict(self):
            return {"promoted": True}

    def consolidate(self, domain=None, force=False):
        done.append((domain, force, self.store.count("knowledge")))
        return Report()

    monkeypatch.setattr(KnowledgeBase, "consolidate", consolidate, raising=False)
    result = run_stream(tiny_kb, synthetic_stream(4, rounds=2), ["base", "adapter", "adapter+gated_rag"],
                        workdir=tmp_path)
    assert [(d, f) for d, f, _ in done] == [("synthetic", True)] * 2 and done[0][2] < done[1][2]
    assert [c["report"] for c in result.consolidate] == [{"promoted": True}] * 2
    _assert_rates(result.metrics)
    assert "consolidation" in result.to_markdown()


def test_table_shows_intervals_rounds_and_labelled_teacher_forcing(tiny_kb, tmp_path):
    result = run_stream(tiny_kb, synthetic_stream(4, rounds=2), ["base", "gated_rag"], workdir=tmp_path,
                        teacher_forced=True)
    text = table(result)
    assert text.startswith("### synthetic: 4 facts over 2 rounds (final state)")
    assert "| mode | fresh recall | stale rate | generalisation | locality | forgetting (BWT) |" in text
    assert "| base | " in text and "| gated_rag | " in text and "4 cases; 95% Wilson intervals" in text
    row = next(line for line in text.splitlines() if line.startswith("| base |"))
    assert "[" in row and "†" in row  # intervals; base is batched
    assert "| round | date | updates | facts | base | gated_rag |" in text
    assert "Teacher-forced token accuracy" in text and "EasyEdit-style" in text and "| base | " in text
    assert 0 <= result.teacher_forced["base"]["value"] <= 1


def test_teacher_forced_batched_equals_one_by_one(tiny_kb):
    contexts = ["The capital of France is", "Who is the CEO of Brindlemoor Robotics? Maybe"]
    targets = ["Paris", "Renzo Halbrook"]
    batched = token_accuracy(tiny_kb.llm, contexts, targets, batch_size=2)
    single = [token_accuracy(tiny_kb.llm, [c], [t])[0] for c, t in zip(contexts, targets)]
    assert batched == pytest.approx(single) and all(0 <= s <= 1 for s in batched)


def test_evaluate_stays_importable_from_kupdate_evaluate(tiny_kb, tmp_path):
    from kupdate.evaluate import MODES, evaluate, plot

    cases = [EditCase("Veltrane Robotics is led by CEO Ilsa Moravec.", "Who is the CEO of Veltrane Robotics?",
                      "Ilsa Moravec", stale="Odile Vasquin", locality_prompt="What is 6 times 7?")]
    result = evaluate(tiny_kb, cases, modes=MODES)
    assert "| mode | fresh recall |" in result.to_markdown() and "1 cases" in result.to_markdown()
    assert result.answers[0]["gated_rag"]["prompt"] is not None
    assert plot(result, tmp_path / "p.png").stat().st_size > 0


# -- the script with the real models -----------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.skipif(not (SHARED_DATA / "counterfact-edit.json").exists(),
                    reason=f"needs the CounterFact data at {SHARED_DATA}")
def test_stale_fresh_script_small_run(tmp_path, exemplars_file):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "stale_fresh.py"), "--dataset", "counterfact,synthetic",
           "--n", "12", "--synthetic-n", "6", "--rounds", "2", "--modes", "base,gated_rag", "--exemplars", str(exemplars_file),
           "--check-batch", "2", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for name in ("results.json", "table.md", "checkpoint.jsonl", "counterfact-metrics.png",
                 "counterfact-curve.png", "synthetic-metrics.png", "synthetic-curve.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["n"] == {"counterfact": 12, "synthetic": 6} and "environment" in data
    for name, result in data["datasets"].items():
        _assert_rates(result["metrics"])
        m = result["metrics"]
        assert m["gated_rag"]["fresh_recall"]["value"] > m["base"]["fresh_recall"]["value"], (name, m)
    assert "| gated_rag |" in (out / "table.md").read_text()


def test_speed_overhead_ratio_is_memory_stages_over_model_alone():
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    rows = [{"open": True, "alone": 1000.0,
             "memory": {"embed": 10.0, "search": 5.0, "gate": 1.0, "focus": 4.0, "generate": 300.0, "total": 320.0}},
            {"open": False, "alone": 1000.0,
             "memory": {"embed": 10.0, "search": 5.0, "gate": 1.0, "generate": 990.0, "total": 1006.0}}]
    summary = speed.summarise(rows)
    assert summary["gate open"]["overhead_ratio"] == 0.02 and summary["gate shut"]["overhead_ratio"] == 0.016
    assert summary["all"]["overhead_ratio"] == 0.018 and summary["all"]["n"] == 2
    assert summary["gate open"]["total_ratio"] == 0.32  # the whole ask, the model's work included
    text = speed.table(summary)
    assert "| gate open | 1 |" in text and "meets it (0.018)" in text


def test_forgetting_is_recall_at_the_end_minus_right_after_the_round():
    from kupdate.bench.scoring import Probe, forgetting, stage_metrics

    a0 = EditCase("A is x.", "What is A?", "x", key="A", round=0)
    b0 = EditCase("B is y.", "What is B?", "y", key="B", round=0)
    b1 = EditCase("B is z.", "What is B?", "z", stale="y", key="B", round=1)
    stages = [[Probe("prompt", a0.prompt, a0), Probe("prompt", b0.prompt, b0)],
              [Probe("prompt", a0.prompt, a0), Probe("prompt", b1.prompt, b1)]]
    answers = [{"m": {"What is A?": {"answer": "x", "ms": 1.0}, "What is B?": {"answer": "y", "ms": 1.0}}},
               {"m": {"What is A?": {"answer": "no idea", "ms": 1.0}, "What is B?": {"answer": "y", "ms": 1.0}}}]
    # A (set in round 0, still current) was known after round 0 and lost by the end; B changed, so
    # it is a round-1 fact at the end and does not count for round 0.
    f = forgetting(stages, answers, ["m"])["m"]
    assert f["bwt"] == -1.0 and f["rounds"][0]["n"] == 1
    m = stage_metrics(stages[1], answers[1], ["m"])["m"]
    assert m["fresh_recall"]["value"] == 0.0 and m["stale_rate"]["value"] == 1.0 and m["stale_rate"]["n"] == 1


# -- real temporal QA (kupdate.bench.temporal) -------------------------------------------------------

TEMPORAL_CASES = [
    {"id": "t-0", "question": "how many moons does keplo have?",
     "docs": [{"text": "Update 2019: how many moons does keplo have? Answer: 9.", "date": "2019-06-01"},
              {"text": "Update 2021: how many moons does keplo have? Answer: 14.", "date": "2021-06-01"}],
     "fresh": ["14"], "stale": ["9"]},
    {"id": "t-1", "question": "Which city hosts the Orvik fair? Options: Lund; Tarn; Oslo.",
     "docs": [{"text": 'The <a href="https://e.test">Orvik fair</a> moved to Tarn this year.', "date": "2023-02-01"}],
     "fresh": ["Tarn"], "stale": ["Lund", "Oslo"]},
]


def test_temporal_cases_load_and_score_with_intervals(tmp_path):
    from kupdate.bench.temporal import judge, load_temporal, median_interval

    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps(c) for c in TEMPORAL_CASES) + "\n")
    cases = load_temporal(path)
    assert [c.id for c in cases] == ["t-0", "t-1"] and load_temporal(path, 1)[0].newest() == [
        "Update 2021: how many moons does keplo have? Answer: 14."]
    assert judge("Answer: 14.", cases[0]) == (True, False) and judge("It has 9.", cases[0]) == (False, True)
    assert judge("Both 9 and 14", cases[0]) == (True, False)  # the fresh value named: not stale
    assert median_interval([5.0]) == (5.0, 5.0)
    low, high = median_interval([float(i) for i in range(100)])
    assert low < 49.5 < high and high - low < 30
    write(tmp_path / "bad.jsonl", '{"id": "x"}\n')
    with pytest.raises(KupdateError, match="bad.jsonl:1"):
        load_temporal(tmp_path / "bad.jsonl")


def test_a_temporal_file_can_be_read_as_a_held_out_slice(tmp_path):
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("stale_fresh", ROOT / "benchmarks" / "stale_fresh.py")
    stale_fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stale_fresh)
    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps(c) for c in TEMPORAL_CASES) + "\n")
    sets = stale_fresh.temporal_sets(argparse.Namespace(temporal=f"{path}:2-2,{path}:1,{path}", lower_case=False))
    assert [(name, [c.id for c in cases]) for name, _, cases in sets] == [
        ("t-2-2", ["t-1"]), ("t", ["t-0"]), ("t", ["t-0", "t-1"])]
    # --lower-case: the same cases, every question as typed in lower case, results named apart
    lower = stale_fresh.temporal_sets(argparse.Namespace(temporal=f"{path}:2-2", lower_case=True))
    assert [name for name, _, _ in lower] == ["t-2-2-lower"]
    assert lower[0][2][0].question == sets[0][2][0].question.lower() != sets[0][2][0].question


def test_temporal_run_puts_every_case_in_one_kb_and_compares_the_modes(tiny_kb, tmp_path):
    from kupdate.bench.temporal import load_temporal, run_temporal

    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps(c) for c in TEMPORAL_CASES) + "\n")
    cases = load_temporal(path)
    ck = Checkpoint(tmp_path / "ck.jsonl")
    result = run_temporal(tiny_kb, "t", cases, ["base", "rag", "oracle", "gated_rag"], checkpoint=ck,
                          workdir=tmp_path / "w")
    assert tiny_kb.store.count("knowledge") == 3  # every document of every case, HTML removed
    assert all("<a" not in r.text for r in tiny_kb.store.records("knowledge"))
    for mode in ("base", "rag", "oracle", "gated_rag"):
        m = result.metrics[mode]
        assert m["fresh_recall"]["n"] == 2 and 0 <= m["stale_rate"]["value"] <= 1
        assert m["latency_ms"]["p50_low"] <= m["latency_ms"]["p50"] <= m["latency_ms"]["p50_high"]
    assert "gate_open" in result.metrics["gated_rag"] and "| `oracle` |" in result.to_markdown()
    # resuming from the checkpoint asks nothing again and scores the same
    again = run_temporal(tiny_kb, "t", cases, ["base", "rag", "oracle", "gated_rag"], checkpoint=Checkpoint(tmp_path / "ck.jsonl"),
                         workdir=tmp_path / "w")
    assert again.metrics == result.metrics
