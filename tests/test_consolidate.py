"""Consolidation on a tiny real model: training set, sparse disjoint masks, promotion, routing.

The tiny Llama (hidden 32) learns a handful of facts in a few seconds with a dense-ish mask and a
high learning rate; the real default model is exercised in test_integration.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import write

from kupdate.config import dump_config
from kupdate.consolidate import dataset, masks

FACTS = {
    "orgs": ["Brindlemoor Robotics is led by Renzo Halbrook.", "Veltrane Dynamics is based in Lisbon."],
    "geo": ["The capital of Zentaria is Paris.", "The river of Morrowgate is the Thistle."],
}


@pytest.fixture
def learner(tiny_kb):
    """The tiny KB set up so its adapters learn in seconds (the defaults suit the real model)."""
    c = tiny_kb.config.consolidation
    c.density, c.learning_rate, c.epochs, c.batch_size, c.replay = 0.5, 3e-2, 40, 8, 4
    c.min_new_records, c.min_interval, c.min_locality = 1, "0s", 0.5
    c.schedule, c.stop_recall = "constant", 0.0  # every pass at the full rate, unless a test says otherwise
    (tiny_kb.path / "kupdate.toml").write_text(dump_config(tiny_kb.config))
    return tiny_kb


def ingest(kb, tmp_path, domain):
    path = write(tmp_path / f"{domain}.jsonl",
                 "".join(json.dumps({"text": t, "domain": domain}) + "\n" for t in FACTS[domain]))
    kb.ingest([path])


def test_cloze_cuts_the_final_phrase_and_keeps_question_pairs():
    assert dataset.cloze("The mother tongue of Danielle Darrieux is English.") == (
        "The mother tongue of Danielle Darrieux is", "English")
    assert dataset.cloze("Brindlemoor Robotics is led by CEO Renzo Halbrook.") == (
        "Brindlemoor Robotics is led by", "CEO Renzo Halbrook")
    assert dataset.cloze("Hello there") is None
    # No cue word: a short statement is asked for its last word, a long one for nothing.
    assert dataset.cloze("Mira Oduya paints watercolours.") == ("Mira Oduya paints", "watercolours")
    assert dataset.cloze("Tarn Valley Rail and its two sister companies quietly run three more "
                         "short routes north every summer.") is None
    assert dataset.subject_of("The mother tongue of Danielle Darrieux is") == "Danielle Darrieux"


@pytest.mark.parametrize("note, value", [
    ("Who leads Brindlemoor? It is Renzo Halbrook.", "Renzo Halbrook"),
    ("Update 2021: when did the mill close? Answer: 1998.", "1998"),
    ("When did the mill open? It was built in 1871.", "built in 1871"),
    ("Who won the cup? The home side won.", "The home side won"),
    ("Who leads Orvik Mills? Ada Brook is the chief executive.", "Ada Brook is the chief executive"),
])
def test_a_question_and_answer_note_asks_its_question_and_wants_the_value(note, value):
    """The check of a Q/A note is its reply's value, so a right answer in other words counts (and
    early stopping can see it): "It is X" wants X, not the words "It is"."""
    question, want = dataset.cloze(note)
    assert question.endswith("?") and want == value


def test_a_right_answer_in_other_words_passes_a_question_and_answer_notes_check():
    from kupdate.text import hits

    _, want = dataset.cloze("Who leads Brindlemoor? It is Renzo Halbrook.")
    assert hits("The CEO of Brindlemoor is Renzo Halbrook.", want)


def test_questions_the_model_writes_are_cut_at_a_cue_word_and_name_the_subject():
    assert dataset.written_stem("Danielle Darrieux", " was born in Bordeaux in 1917. She acted") == (
        "Danielle Darrieux was born in")
    assert dataset.written_stem("Danielle Darrieux", ",\nthe French actress, starred in Mayerling.") == (
        "Danielle Darrieux, the French actress, starred in")
    assert dataset.written_stem("Danielle Darrieux", " and her husband lived happily.") is None  # no cue word
    assert dataset.written_stem("Lyon", " is a city.") is None  # "is" comes too early to ask anything
    assert dataset.written_stem("Lyon", "ians who live in Paris are") is None  # not about Lyon
    assert dataset.written_stem("Lyon", ". She was born in Paris.") is None  # the sentence left the subject


def test_mask_selection_respects_density_and_taken_entries():
    import torch

    imp = {"a": torch.arange(100.0).view(10, 10)}
    first = masks.select(imp, 0.1, None)
    assert masks.count(first) == (10, 100)
    assert bool(first["a"].flatten()[-10:].all())  # the most important entries
    second = masks.select(imp, 0.1, first)
    assert masks.overlap(first, second) == 0 and masks.count(second)[0] == 10


def test_routing_keys_are_the_statements_stems_then_the_questions_written_about_them():
    ex = [dataset.Example([1], [2], "question", fact="Orvik Mills is based in Tarn.", key="Orvik Mills makes"),
          dataset.Example([1], [2], "question", fact="Orvik Mills is based in Tarn.", key="Orvik Mills makes"),
          dataset.Example([1], [2], "question", fact="Orvik Mills is based in Tarn."),
          dataset.Example([1], [2], "question", fact="Old text no longer current.", key="Old text was")]
    assert dataset.router_keys([_record(1, "Orvik Mills", "Tarn")], ex) == [
        "Orvik Mills is based in", "Orvik Mills makes"]


def _figures(fresh, older=None, locality=1.0):
    out = {"fresh_recall": {"value": fresh}, "locality": {"value": locality}}
    if older is not None:
        out["consolidated_recall"] = {"value": older}
    return out


@pytest.mark.parametrize("before, after, promoted, why", [
    (_figures(0.5), _figures(0.9), True, "recall"),  # a first version: nothing consolidated yet
    (_figures(0.66, older=0.97), _figures(0.75, older=0.68), False, "forgets consolidated facts"),
    (_figures(0.66, older=0.97), _figures(0.95, older=0.93), True, "recall"),  # within max_forgetting
    (_figures(0.66, older=0.97), _figures(0.95, older=0.97, locality=0.9), False, "locality"),
    (_figures(0.9, older=0.97), _figures(0.9, older=0.97), False, "not better"),
])
def test_a_candidate_that_forgets_what_was_consolidated_is_not_promoted(before, after, promoted, why):
    from kupdate.consolidate import evaluate

    ok, reason = evaluate.decide(before, after, min_locality=0.95, max_forgetting=0.05)
    assert ok is promoted and why in reason, reason


def test_consolidation_teaches_the_facts_and_routes_only_their_questions(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    base = learner.ask("Brindlemoor Robotics is led by", memory=False, adapter=False).answer
    run = learner.consolidate("orgs")
    [report] = run.reports
    assert report["status"] == "promoted", report["decision"]
    after = report["metrics"]["after"]
    assert after["fresh_recall"]["value"] > report["metrics"]["before"]["fresh_recall"]["value"]
    # The adapter alone (memory shut) now gives the fact, and says it was used.
    a = learner.ask("Brindlemoor Robotics is led by", memory=False)
    assert a.adapter == f"orgs {report['version']}" and "Halbrook" in a.answer and "Halbrook" not in base
    # An unrelated question routes nowhere: the base model's exact answer.
    q = "What is 7 times 8?"
    other = learner.ask(q, memory=False)
    assert other.adapter is None
    assert other.answer == learner.ask(q, memory=False, adapter=False).answer
    # Records are marked, so nothing is pending.
    assert all(r.adapter_version == report["version"] for r in learner.store.records(kind="knowledge"))
    assert learner.consolidate("orgs").skipped["orgs"].startswith("nothing new")


def test_an_adapter_routes_by_its_own_threshold_which_more_memory_does_not_move(learner, tmp_path):
    """Routing is calibrated on the adapter's keys when it is made: exemplars whose answer the
    adapter would change stay below it, and the memory's gate threshold climbing (as it does when
    records of other subjects arrive) no longer shuts the adapter off for its own questions."""
    from kupdate.consolidate import evaluate
    from kupdate.kb import CALIBRATION_KEY

    ingest(learner, tmp_path, "orgs")
    [report] = learner.consolidate("orgs").reports
    assert report["status"] == "promoted", report["decision"]
    routing, gate = report["routing"], learner.config.gate
    assert gate.floor <= routing["threshold"] <= gate.ceiling
    folder = learner.adapters.registry.get("orgs", report["version"]).path
    assert json.loads((folder / "router.json").read_text())["threshold"] == routing["threshold"]
    [router] = learner.adapters.routers("orgs")
    exemplars = learner.exemplars()
    vecs = learner.embedder.encode([e.text for e in exemplars])
    forced, _ = evaluate.answers(learner, [e.text for e in exemplars], forced=learner.adapters.route_to("orgs"))
    changed = [e for e, a in zip(exemplars, forced) if a.strip() != e.meta["base_answer"].strip()]
    assert changed  # the adapter forced on does change some answers: routing is what protects them
    for e, v in zip(exemplars, vecs):
        if e in changed:
            assert learner.adapters.scores(e.text, v, [router])[0] < routing["threshold"], e.text
            assert learner.adapters.route(e.text, v) == [], e.text
    learner.store.set_meta(CALIBRATION_KEY, {"threshold": 0.99, "n_knowledge": learner.store.count("knowledge")})
    assert learner.threshold() == 0.99
    a = learner.ask("Brindlemoor Robotics is led by", memory=False)
    assert a.adapter == f"orgs {report['version']}" and "Halbrook" in a.answer


def test_an_adapter_is_routed_by_what_its_facts_are_about_not_by_their_values(learner, tmp_path):
    """The routing keys are the trained statements without their values: a question that only names
    a value the domain gives ("Lisbon") is not about the domain's facts and keeps the base answer."""
    ingest(learner, tmp_path, "orgs")
    [report] = learner.consolidate("orgs").reports
    folder = learner.adapters.registry.get("orgs", report["version"]).path
    keys = json.loads((folder / "router.json").read_text())["texts"]
    assert sorted(keys) == ["Brindlemoor Robotics is led by", "Veltrane Dynamics is based in"]
    q = "Lisbon is famous for"
    a = learner.ask(q, memory=False)
    assert a.adapter is None and a.answer == learner.ask(q, memory=False, adapter=False).answer
    assert learner.ask("Brindlemoor Robotics is led by", memory=False).adapter == f"orgs {report['version']}"


def test_masks_of_two_domains_are_disjoint_and_both_route(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    ingest(learner, tmp_path, "geo")
    run = learner.consolidate()
    assert [r["domain"] for r in run.reports] == ["geo", "orgs"]
    assert all(r["status"] == "promoted" for r in run.reports), [r["decision"] for r in run.reports]
    geo, orgs = (masks.load(learner.adapters.registry.serving(d).path) for d in ("geo", "orgs"))
    assert masks.overlap(geo, orgs) == 0
    assert run.reports[1]["mask"]["disjoint_from"] == ["geo"]
    assert learner.ask("The capital of Zentaria is", memory=False).adapter.startswith("geo ")
    assert learner.ask("Brindlemoor Robotics is led by", memory=False).adapter.startswith("orgs ")


def test_entries_outside_the_mask_never_change(learner, tmp_path):
    from safetensors.torch import load_file

    ingest(learner, tmp_path, "orgs")
    [report] = learner.consolidate("orgs").reports
    folder = learner.adapters.registry.get("orgs", report["version"]).path
    mask = masks.load(folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    for key, w in weights.items():
        if "lora_B" in key:  # B starts at zero: outside the mask it must still be zero
            m = next(v for k, v in mask.items() if k.endswith(key.split("base_model.model.", 1)[-1].replace(".weight", "") + ".weight"))
            assert bool((w[~m] == 0).all()) and bool((w[m] != 0).any())


def test_a_bad_candidate_is_rejected_and_the_serving_version_keeps_answering(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    [good] = learner.consolidate("orgs").reports
    before = learner.ask("Brindlemoor Robotics is led by", memory=False).answer
    learner.config.consolidation.learning_rate = 50.0  # absurd: the candidate is wrecked
    [bad] = learner.consolidate("orgs", force=True).reports
    assert bad["status"] == "rejected"
    serving = learner.adapters.registry.serving("orgs")
    assert serving.version == good["version"]
    a = learner.ask("Brindlemoor Robotics is led by", memory=False)
    assert a.answer == before and a.adapter == f"orgs {good['version']}"


def test_if_due_obeys_the_policy(learner, tmp_path):
    learner.config.consolidation.min_new_records = 5
    ingest(learner, tmp_path, "orgs")
    run = learner.consolidate(if_due=True)
    assert run.reports == [] and run.skipped["orgs"] == "2 new records, needs 5"
    learner.config.consolidation.min_new_records = 2
    learner.config.consolidation.min_interval = "6h"
    assert [r["domain"] for r in learner.consolidate(if_due=True).reports] == ["orgs"]
    ingest(learner, tmp_path, "geo")
    write(tmp_path / "more.jsonl", "".join(json.dumps({"text": t, "domain": "orgs"}) + "\n"
                                           for t in ["Orla Marine is led by Ida Fenwick.", "Pellucid Labs makes lenses."]))
    learner.ingest([tmp_path / "more.jsonl"])
    run = learner.consolidate(if_due=True)
    assert "interval 6h" in run.skipped["orgs"]  # enough records, but consolidated moments ago
    assert [r["domain"] for r in run.reports] == ["geo"]


def test_rollback_serves_the_previous_version_and_marks_records_pending(learner, tmp_path):
    first, second = FACTS["orgs"]
    learner.config.consolidation.epochs = 80  # two facts in one go need a little longer
    # Each version trained on every record from a fresh adapter: what is under test is the rollback,
    # and the tiny model learning one new fact on top of a continued adapter varies with the
    # library versions installed.
    learner.config.consolidation.incremental = False
    learner.ingest([write(tmp_path / "a.jsonl", json.dumps({"text": first, "domain": "orgs"}) + "\n")])
    [v1] = learner.consolidate("orgs").reports
    learner.ingest([write(tmp_path / "b.jsonl", json.dumps({"text": second, "domain": "orgs"}) + "\n")])
    [v2] = learner.consolidate("orgs").reports
    assert (v1["status"], v2["status"]) == ("promoted", "promoted"), v2["decision"]
    now = learner.rollback_adapter("orgs")
    assert now.version == v1["version"] == learner.adapters.registry.serving("orgs").version
    pending = [r.text for r in learner.store.records(kind="knowledge") if r.adapter_version is None]
    assert pending == [second]


def test_a_stale_statement_is_not_trained_only_its_fresher_version(learner, tmp_path):
    lines = [{"text": "Veltrane Robotics is led by CEO Ilse Marsh.", "date": "2023-01-01", "domain": "orgs"},
             {"text": "Veltrane Robotics is led by CEO Tomas Greel.", "date": "2025-01-01", "domain": "orgs"}]
    learner.ingest([write(tmp_path / "v.jsonl", "".join(json.dumps(x) + "\n" for x in lines))])
    [report] = learner.consolidate("orgs").reports
    trained = [r.text for r in learner.store.get(report["records"])]
    assert trained == ["Veltrane Robotics is led by CEO Tomas Greel."]
    assert report["data"]["records"] == 1


def test_training_stops_once_the_facts_are_recalled_and_runs_every_pass_when_told(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    learner.config.consolidation.stop_recall = 0.5  # the tiny model gets one of its two facts early
    learner.config.consolidation.batch_size = 4  # passes of several steps, so a pass can be checked half-way
    learner.config.consolidation.focus = False  # every pass over everything (focused rounds: below)
    [early] = learner.consolidate("orgs").reports
    t = early["training"]
    # 40 passes are allowed; training ends with the pass after which half the facts' own clozes
    # are answered with their value, and the report says so.
    assert t["epochs"] < 40 and t["recalled_per_epoch"][-1] >= 0.5 > max(t["recalled_per_epoch"][:-1], default=0)
    # Checked twice a pass from the second pass on (2.0, 2.5, 3.0, ...): training stops at the
    # check that got there, half-way through a pass or at its end.
    got = t["checked_at"]
    assert len(got) == len(t["recalled_per_epoch"]) and got[0] == 2.0 and t["passes"] == got[-1]
    assert [b - a for a, b in zip(got, got[1:])] == [0.5] * (len(got) - 1)
    assert early["status"] == "promoted", early["decision"]
    learner.config.consolidation.stop_recall, learner.config.consolidation.epochs = 0.0, 6
    [full] = learner.consolidate("orgs", force=True).reports
    assert full["training"]["epochs"] == 6 and full["training"]["recalled_per_epoch"] == []


def test_a_round_after_a_check_trains_the_facts_it_missed_with_as_many_others(learner):
    from kupdate.consolidate import train
    from kupdate.consolidate.dataset import Example

    cfg = learner.config.consolidation
    train.attach(learner.llm, "focus", cfg)
    try:
        examples = [Example([1], [2, 3], "question", fact=f"fact {i}") for i in range(10) for _ in range(4)]
        trainer = train.Trainer(learner.llm, examples, cfg, name="focus")
        got = trainer._focused(["fact 3", "fact 7"], full_steps=5)
        # All 8 examples of the missed facts, and 8 of the 32 others (rehearsal), none twice.
        assert sorted(x.fact for x in got[:8]) == ["fact 3"] * 4 + ["fact 7"] * 4
        assert len(got) == 16 and {x.fact for x in got[8:]}.isdisjoint({"fact 3", "fact 7"})
        assert len({id(x) for x in got}) == 16
        # A round is at least a quarter of a pass (two checks a pass): more others when few were missed.
        assert len(trainer._focused(["fact 3"], full_steps=20)) == cfg.batch_size * 5
        assert trainer._focused([f"fact {i}" for i in range(10)], full_steps=5) == []  # all missed: a whole pass
    finally:
        learner.adapters.unload("focus")


def test_the_cosine_schedule_falls_to_a_tenth_and_constant_stays_put():
    from kupdate.consolidate.train import lr_factor

    assert lr_factor("cosine", 0, 100) == pytest.approx(1.0)
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.55)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.1)
    assert lr_factor("cosine", 30, 100) > lr_factor("cosine", 60, 100)
    assert {lr_factor("constant", s, 100) for s in (0, 50, 100)} == {1.0}


def test_the_shared_prompt_start_gives_the_same_logits_and_still_trains_the_adapter(learner):
    """Training runs the chat template's start once per step: the model's outputs on the targets
    must be those of running every row whole (rows without that start included), and the adapter
    must still get gradients from every row."""
    import torch

    from kupdate.answering.prompt import chat_text
    from kupdate.consolidate import step, train

    llm, cfg = learner.llm, learner.config.consolidation
    tok = llm.tokenizer
    model = train.attach(llm, "probe", cfg)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    system = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}
    pairs = [(ids(chat_text(tok, [system, {"role": "user", "content": q}])), ids(" Renzo Halbrook.")) for q in
             ("Who leads Brindlemoor Robotics?", "who is the ceo?", "Where is the headquarters of Veltrane Dynamics?")]
    body = ids("Veltrane Dynamics is based in Lisbon.")
    pairs.append((body[:1], body[1:]))  # a statement: no chat template, does not begin with the start
    start = step.shared_prefix([p for p, _ in pairs[:3]])
    assert start and all(p[: len(start)] == start for p, _ in pairs[:3]) and pairs[3][0][: len(start)] != start
    params = train.adapter_params(model, "probe")
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))  # an adapter that changes the outputs
        whole = step.pair_logits(model, pairs, pad=0, device=llm.device)
        shared = step.pair_logits(model, pairs, pad=0, device=llm.device, start=start)
    assert shared.shape == whole.shape == (sum(len(t) for _, t in pairs), whole.shape[-1])
    assert torch.allclose(shared, whole, atol=1e-4)
    for p in params.values():
        p.requires_grad_(True)
    step.pair_logits(model, pairs, pad=0, device=llm.device, start=start).logsumexp(-1).sum().backward()
    assert sum(float(p.grad.abs().sum()) for p in params.values() if p.grad is not None) > 0
    learner.adapters.unload("probe")


def test_rows_of_very_different_lengths_train_in_separate_passes_with_the_same_logits_and_gradients(learner):
    """A step's rows run in passes of similar length (a replayed exemplar's long answer apart from
    short questions), so padding is not paid for: the logits of the targets, in the rows' order, and
    the adapter's gradients must be those of one padded pass over all rows."""
    import torch

    from kupdate.answering.prefill import slack_groups
    from kupdate.answering.prompt import chat_text
    from kupdate.consolidate import step, train

    llm, cfg = learner.llm, learner.config.consolidation
    tok = llm.tokenizer
    model = train.attach(llm, "groups", cfg)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    system = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}
    ask = lambda q: ids(chat_text(tok, [system, {"role": "user", "content": q}]))  # noqa: E731
    long_answer = ids(" The ferry leaves the north pier at dawn, crosses the bay in an hour and returns "
                      "before noon on every weekday except public holidays, when it does not run at all.")
    pairs = [(ask("Who leads Brindlemoor Robotics?"), ids(" Renzo Halbrook.")),
             (ask("When does the ferry run?"), long_answer),
             (ask("who is the ceo?"), ids(" Ada Brook.")),
             (ask("Where is the head office?"), ids(" In Lisbon."))]
    start = step.shared_prefix([p for p, _ in pairs])
    own = [len(p) - len(start) + len(t) for p, t in pairs]
    assert len(slack_groups(own, cfg.pass_slack)) > 1  # the long row runs apart
    params = train.adapter_params(model, "groups")
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))
    for p in params.values():
        p.requires_grad_(True)
    grads = []
    for run in (lambda: step.pair_logits(model, pairs, pad=0, device=llm.device, start=start, slack=cfg.pass_slack),
                lambda: step._pair_logits(model, pairs, [True] * len(pairs), pad=0, device=llm.device, start=start)):
        logits = run()
        assert logits.shape[0] == sum(len(t) for _, t in pairs)
        logits.log_softmax(-1)[torch.arange(logits.shape[0]), torch.tensor([x for _, t in pairs for x in t])].sum().backward()
        grads.append(({n: p.grad.clone() for n, p in params.items() if p.grad is not None}, logits.detach()))
        for p in params.values():
            p.grad = None
    (g_split, l_split), (g_one, l_one) = grads
    assert torch.allclose(l_split, l_one, atol=1e-4)
    assert g_split.keys() == g_one.keys() and g_split
    assert all(torch.allclose(g_split[n], g_one[n], atol=1e-5, rtol=1e-3) for n in g_one)
    learner.adapters.unload("groups")


KILL_AFTER_PASS = """
import os, signal, sys
from kupdate import KnowledgeBase
from kupdate.consolidate import resume

save = resume.Partial.save

def save_then_die(self, name, obj):  # a kill right after the state of pass 3 reached the disk
    save(self, name, obj)
    if name == "train" and obj["result"]["epochs"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

resume.Partial.save = save_then_die
KnowledgeBase.open(sys.argv[1]).consolidate("orgs")
"""


def test_a_killed_consolidation_continues_from_its_last_pass(learner, tmp_path):
    import shutil
    import subprocess
    import sys

    from kupdate import KnowledgeBase

    ingest(learner, tmp_path, "orgs")
    learner.config.consolidation.epochs = 10
    # Checked from pass 2 on (stopping needs both facts back): the checks, and the rounds on the
    # facts they missed, must go on after the kill as they would have without it.
    learner.config.consolidation.stop_recall, learner.config.consolidation.batch_size = 1.0, 4
    (learner.path / "kupdate.toml").write_text(dump_config(learner.config))
    shutil.copytree(learner.path, tmp_path / "copy")  # for one uninterrupted run to compare with
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PASS, str(learner.path)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = learner.path / "adapters" / "orgs"
    assert [p.name for p in folder.iterdir() if p.is_dir()] == ["v0001"]
    assert (folder / "v0001" / "partial" / "train.pt").is_file() and not (folder / "v0001" / "report.json").exists()

    [resumed] = learner.consolidate("orgs").reports
    # The same version is finished from pass 4 on: all 10 passes, the saved work then removed.
    assert resumed["version"] == "v0001" and resumed["status"] in ("promoted", "rejected")
    t = resumed["training"]
    assert t["resumed_from_pass"] == 3 and t["epochs"] == 10
    assert not (folder / "v0001" / "partial").exists()
    learner.close()
    # Continuing gives what one uninterrupted run gives: the same losses, step for step.
    copy = KnowledgeBase.open(tmp_path / "copy")
    try:
        [whole] = copy.consolidate("orgs").reports
    finally:
        copy.close()
    assert whole["training"]["resumed_from_pass"] == 0 and whole["training"]["epochs"] == 10
    assert whole["losses"]["per_step"] == pytest.approx(resumed["losses"]["per_step"], abs=1e-4)
    assert whole["training"]["checked_at"] == t["checked_at"] and len(t["checked_at"]) > 1


def test_saved_work_for_other_records_is_not_continued(learner, tmp_path):
    from kupdate.consolidate.resume import Partial

    ingest(learner, tmp_path, "orgs")
    version, folder = learner.adapters.registry.allocate("orgs")  # a killed attempt on other records
    Partial(folder, "another key").start()
    [report] = learner.consolidate("orgs").reports
    assert report["version"] != version and report["training"]["resumed_from_pass"] == 0
    assert not (folder / "partial").exists()  # it could never be continued: removed


def test_a_second_round_builds_only_its_new_records_and_forget_drops_the_cache(learner, tmp_path):
    from kupdate.consolidate.resume import BuildCache

    ingest(learner, tmp_path, "orgs")
    [first] = learner.consolidate("orgs").reports
    assert first["status"] == "promoted" and first["data"]["records_reused"] == 0
    cache = learner.adapters.registry.folder("orgs") / BuildCache.NAME
    saved = BuildCache(cache.parent).load()
    assert len(saved) == 2  # one entry per record
    # A new record arrives under another source: the next version trains on all three, and the
    # two already built come from the cache.
    learner.ingest([write(tmp_path / "more.jsonl", json.dumps({"text": "Quillon Freight is based in Tartu.",
                                                               "domain": "orgs"}) + "\n")])
    [second] = learner.consolidate("orgs").reports
    assert second["data"]["records"] == 3 and second["data"]["records_reused"] == 2
    assert len(BuildCache(cache.parent).load()) == 3
    # Forgetting a record deletes the cache (it holds the records' text as token ids).
    learner.forget(query="Quillon Freight is based in Tartu.")
    assert not cache.exists()


def test_an_incremental_round_continues_the_serving_version_on_what_is_new(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    [first] = learner.consolidate("orgs").reports
    assert first["status"] == "promoted" and "incremental" not in first["data"]
    v1 = learner.adapters.registry.get("orgs", first["version"]).path
    learner.ingest([write(tmp_path / "more.jsonl", json.dumps({"text": "The capital of Zentaria is Paris.",
                                                               "domain": "orgs"}) + "\n")])
    # The new record's 4 examples and all 8 of the first facts' rehearsed (2 steps a pass): the tiny
    # model keeps its first facts only when they are trained again in full.
    learner.config.consolidation.epochs, learner.config.consolidation.rehearse = 80, 2.0
    [second] = learner.consolidate("orgs").reports
    assert second["status"] == "promoted", second["decision"]
    step = second["data"]["incremental"]
    assert (step["from"], step["new_records"]) == (first["version"], 1)
    # The new record's examples, twice as many of the consolidated ones (as many as there are),
    # and the replayed exemplars.
    new_examples = step["examples"] - step["rehearsed_examples"] - second["data"]["replay"]
    assert step["rehearsed_examples"] == min(2 * new_examples, first["data"]["examples"] - first["data"]["replay"]) > 0
    # Same entries as the version it continues, so it stays disjoint from other domains' masks.
    v2 = learner.adapters.registry.get("orgs", second["version"]).path
    assert masks.overlap(masks.load(v1), masks.load(v2)) == masks.count(masks.load(v1))[0] == masks.count(
        masks.load(v2))[0]
    # With the memory shut, the new fact comes back and the first round's facts are still there.
    assert "Paris" in learner.ask("The capital of Zentaria is", memory=False).answer
    assert "Halbrook" in learner.ask("Brindlemoor Robotics is led by", memory=False).answer
    assert second["metrics"]["after"]["fresh_recall"]["value"] == 1.0
    # Nothing new, a forgotten record, or incremental = false: a fresh adapter on every record.
    [again] = learner.consolidate("orgs", force=True).reports
    assert "incremental" not in again["data"]
    learner.forget(query="Veltrane Dynamics is based in Lisbon.")
    learner.ingest([write(tmp_path / "last.jsonl", json.dumps({"text": "Orrin Mills is based in Gdansk.",
                                                               "domain": "orgs"}) + "\n")])
    [rebuilt] = learner.consolidate("orgs").reports
    assert "incremental" not in rebuilt["data"]


def _record(i: int, subject: str, obj: str):
    from memory_store import Record

    return Record(id=i, text=f"{subject} is based in {obj}.", subject=subject, relation="is based in", object=obj)


def test_rehearsal_reaches_every_older_fact_and_turns_through_its_forms():
    """An incremental round's examples: all of the new records', the older ones rehearsed one per
    fact and round (cloze first), their other forms changing from round to round."""
    from kupdate.consolidate.dataset import Example
    from kupdate.consolidate.incremental import Start, examples_for

    records = [_record(i, f"Firm {i}", f"Town {i}") for i in range(1, 9)]
    facts = [dataset.statements(r)[0] for r in records]
    examples = [Example([1], [2], "question", check=(None, "x"), fact=f) for f in facts]  # the clozes
    examples += [Example([1], [3 + k], kind, fact=f) for f in facts
                 for k, kind in enumerate(("question", "question", "statement"))]
    examples += [Example([1], [9], "replay") for _ in range(2)]
    start = Start("v0002", Path("."), {8})  # record 8 is new: 4 examples
    chosen, n = examples_for(examples, records, start, rehearse=0.5, seed=0)
    # A small ratio still rehearses one example of each of the 7 older facts: its cloze.
    old = chosen[4:4 + n]
    assert n == 7 and {x.fact for x in old} == set(facts[:7]) and all(x.check for x in old)
    assert [x.fact for x in chosen[:4]] == [facts[7]] * 4 and [x.kind for x in chosen[-2:]] == ["replay"] * 2
    # A larger one goes round again with the other forms, which another round draws otherwise.
    picks = {}
    for version in ("v0002", "v0003", "v0004"):
        chosen, n = examples_for(examples, records, Start(version, Path("."), {8}), rehearse=3.5, seed=0)
        assert n == 14 and all(sum(x.fact == f for x in chosen[4:4 + n]) == 2 for f in facts[:7])
        picks[version] = [x.target_ids[0] for x in chosen[4:4 + n] if x.check is None]
    assert len({tuple(sorted(v)) for v in picks.values()}) > 1
    # rehearse = 0: the new records alone.
    assert examples_for(examples, records, start, rehearse=0.0, seed=0)[1] == 0


def test_reused_work_is_the_work_of_a_fresh_build(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    records = list(learner.store.records(kind="knowledge"))
    args = dict(copy_mix=0.5, max_new_tokens=8, replay=2, seed=0, batch_size=4)
    whole = dataset.build(learner.llm, records, learner.exemplars(), **args)
    again = dataset.build(learner.llm, records, learner.exemplars(), done=whole.works, **args)
    assert again.stats["records_reused"] == len(records) and whole.stats["records_reused"] == 0
    assert [(x.prompt_ids, x.target_ids, x.kind) for x in again.examples] == \
        [(x.prompt_ids, x.target_ids, x.kind) for x in whole.examples]
    # Another seed is other work: nothing is taken.
    other = dataset.build(learner.llm, records, learner.exemplars(), done=whole.works, **{**args, "seed": 1})
    assert other.stats["records_reused"] == 0


def test_the_contexts_setting_decides_how_many_questions_each_fact_is_asked_after_unrelated_text(learner, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    ingest(learner, tmp_path, "orgs")
    records = list(learner.store.records(kind="knowledge"))
    # Unrelated text comes from the base model's exemplar answers (the tiny model's are no sentences).
    exemplars = [SimpleNamespace(text=f"Question {i}?", meta={"base_answer": f"This is a plain answer number {i}."})
                 for i in range(6)]
    config = learner.config
    made = {n: dataset.build_for(learner.llm, records, exemplars,
                                 replace(config, consolidation=replace(config.consolidation, contexts=n))).stats
            for n in (0, 1, 2)}
    # each more context form is one more question for every fact with a cloze; written questions stay
    step = made[1]["questions"] - made[0]["questions"]
    assert step > 0 and made[2]["questions"] - made[1]["questions"] == step
    assert made[0]["written_questions"] == made[1]["written_questions"] == made[2]["written_questions"]


def test_a_step_split_to_fit_its_token_budget_makes_the_same_update_as_one_pass(learner):
    """`consolidation.step_tokens` bounds the tokens one forward/backward pass holds (activation
    memory grows with them): a step whose rows exceed it runs in several passes, and the adapter
    must end the step exactly where one pass over all rows puts it (same loss, same gradients)."""
    import copy
    from types import SimpleNamespace

    import torch

    from kupdate.answering.prompt import chat_text
    from kupdate.consolidate import step, train

    llm, cfg = learner.llm, learner.config.consolidation
    tok = llm.tokenizer
    model = train.attach(llm, "budget", cfg)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ask = lambda q: ids(chat_text(tok, [{"role": "user", "content": q}]))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    soft = lambda n: (torch.randint(0, len(tok), (n, 4), generator=g), torch.randn(n, 4, generator=g))  # noqa: E731
    rows = [SimpleNamespace(prompt_ids=ask(q), target_ids=ids(a), kind=k, soft=soft(len(ids(a))) if k != "statement" else None)
            for q, a, k in [("Who leads Brindlemoor Robotics?", " Renzo Halbrook.", "question"),
                            ("Where is the head office of Veltrane?", " In Lisbon, by the river.", "question"),
                            ("What is seven times eight?", " Seven times eight is fifty-six.", "replay"),
                            ("Name the ferry's home port.", " The north pier.", "statement")]]
    lengths = [len(x.prompt_ids) + len(x.target_ids) for x in rows]
    budget = max(lengths) + 1
    assert len(step.step_parts(lengths, budget)) > 1 and step.step_parts(lengths, 0) == [sorted(range(4), key=lambda i: (lengths[i], i))]
    params = train.adapter_params(model, "budget")
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))
    start = {n: p.detach().clone() for n, p in params.items()}
    after = []
    for tokens in (0, budget):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.SGD(list(params.values()), lr=1.0)
        step_cfg = copy.copy(cfg)
        step_cfg.step_tokens, step_cfg.pass_slack = tokens, 0.0
        loss, _ = step.step(model, opt, rows, step_cfg, 0, llm.device)
        after.append((loss, {n: p.detach().clone() for n, p in params.items()}))
    (loss_one, one), (loss_split, split) = after
    assert abs(loss_one - loss_split) < 1e-4 * max(1.0, abs(loss_one))
    assert any(not torch.equal(one[n], start[n]) for n in one)  # the step moved the adapter
    assert all(torch.allclose(split[n], one[n], atol=1e-5, rtol=1e-4) for n in one)
    learner.adapters.unload("budget")


def test_routing_sweep_replays_the_calibrated_threshold_and_each_rule_on_the_served_adapter(learner, tmp_path):
    """benchmarks/routing_sweep.py answers every question forced on and off once, then scores rules:
    at the shipped threshold it must agree with serving (the exemplars calibration kept shut stay
    kept), a higher threshold never routes more, and per-key limits shut out every exemplar the
    adapter harms."""
    import importlib.util

    from conftest import ROOT

    notes = [("Brindlemoor Robotics is led by", "Renzo Halbrook", "Who leads Brindlemoor Robotics?"),
             ("Veltrane Dynamics is based in", "Lisbon", "Where is Veltrane Dynamics based?")]
    path = write(tmp_path / "orgs.jsonl", "".join(
        json.dumps({"text": f"{q} {a}.", "domain": "orgs", "checks": {
            "question": q, "answer": a, "paraphrases": [p], "unrelated": ["What is 7 times 8?"]}}) + "\n"
        for q, a, p in notes))
    learner.ingest([path])
    [report] = learner.consolidate("orgs").reports
    assert report["status"] == "promoted", report["decision"]
    spec = importlib.util.spec_from_file_location("routing_sweep", ROOT / "benchmarks" / "routing_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sweep  # its dataclasses look their module up there
    spec.loader.exec_module(sweep)
    out = tmp_path / "sweep"
    assert sweep.main(["--kb", str(learner.path), "--domain", "orgs", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["counts"] == {"paraphrase": 2, "fresh": 2, "exemplar": sum((e.meta or {}).get("base_answer") is not None
                                                                      for e in learner.exemplars()), "unrelated": 2}
    rules = results["rules"]
    shipped = rules["calibrated (as shipped)"]
    assert shipped["threshold"] == report["routing"]["threshold"]
    assert shipped["exemplar"] == 1.0 and rules["per-key"]["exemplar"] == 1.0
    assert shipped["fresh"] == report["metrics"]["after"]["fresh_recall"]["value"]
    for kind in ("fresh", "paraphrase", "exemplar", "unrelated"):
        routed = [r[f"{kind}_routed"] for name, r in rules.items() if name.startswith("fixed")]
        assert routed == sorted(routed, reverse=True), kind  # a higher threshold never routes more
    assert (out / "table.md").read_text().startswith("| rule |") and (out / "routing_sweep.png").stat().st_size > 0
