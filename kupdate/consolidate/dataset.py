"""The training set of a consolidation, built from a domain's memory (DESIGN.md section 7, step 1).

For every current record of the domain:
- its statements (sentences), as plain language-model text;
- questions about each statement: a structured fact (subject, relation, object) gives the cloze
  "subject relation"; free text gives the cloze of each sentence (the sentence cut before its
  final phrase, "The mother tongue of X is" -> "English"). Each cloze is asked in a few surface
  forms (the cloze itself, "Complete the sentence: ...", "What do you know about X?", after
  unrelated text), so the student learns the fact rather than one string;
- questions generated with the model: it writes about the statement's subject ("Ada Brook
  was a French actress born in"), and each sentence it writes, cut at a cue word, is asked too.
  Their answer is the teacher's when it gives the fact, else the statement: whatever is asked
  about the subject, the student brings up the new fact, as the teacher with the note does;
- the teacher's answers: the same model with the statement in context (kupdate's memory prompt and
  memory-aware decoding), kept when they give the answer; otherwise the statement itself.
Each question carries the teacher's token distributions over its answer (KL target).

Replay: exemplar questions with the base model's answers and distributions (KL to the base model),
so the adapter leaves old behaviour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kupdate.answering.decoding import GENERATION_BATCH, generate, length_batches
from kupdate.answering.notes import Note
from kupdate.answering.notes import statements as note_statements
from kupdate.answering.prompt import Prompt, base_prompt, memory_prompt
from kupdate.config import ConsolidationConfig
from kupdate.language import get_language
from kupdate.text import hits

MAX_ANSWER_WORDS = 6
SHORT_STATEMENT_WORDS = 12  # a sentence without a cue word is cut before its last word up to this length
TOP_K = 32  # teacher distributions are kept as their top-k tokens
STEMS_PER_SUBJECT = 3  # questions the model writes about each subject
STEM_TEMPERATURE = 0.9
STEM_TOKENS = 20


@dataclass
class Probe:
    """A question about one fact with the answer that must come back."""

    question: str
    answer: str
    record_id: int
    statement: str


@dataclass
class Example:
    """One training sequence: prompt ids (no loss) + target ids (loss), with optional soft targets."""

    prompt_ids: list[int]
    target_ids: list[int]
    kind: str  # "statement" | "question" | "replay"
    soft: tuple[Any, Any] | None = None  # (top-k ids [T, K], log-probs [T, K]) per target token
    teacher: list[int] | None = None  # teacher input ids (memory prompt) for questions
    # Of the fact's own cloze: (the question's prompt, the answer it must give). Training stops
    # early once enough of them come back (`train.answered`); the facts they miss are trained
    # again first (`Trainer._focused`).
    check: tuple[Any, str] | None = None
    fact: str = ""  # the statement a statement or question example teaches ("" for replay)
    # A question the model wrote about the fact's subject, without the unrelated text put in front
    # of it: one of the adapter's routing keys (`router_keys`). Empty for every other example (the
    # cloze's own forms route by its stem) and in builds made before keys were kept.
    key: str = ""


@dataclass
class TrainingSet:
    examples: list[Example]
    probes: list[Probe]
    stats: dict[str, int] = field(default_factory=dict)
    # Each record's work by `work_key`: what a later build of the domain may take as it is.
    works: dict[str, Any] = field(default_factory=dict)


def statements(record: Any) -> list[str]:
    """The sentences of a record (a question is kept with the sentence answering it)."""
    if record.subject and record.relation and record.object:
        return [f"{record.subject} {record.relation} {record.object}."]
    lang = get_language()
    return [s for s in note_statements(record.text, lang) if len(s.split()) >= 3] or lang.split_sentences(record.text)[:1]


def cloze(sentence: str) -> tuple[str, str] | None:
    """Split a sentence into (stem, answer): the stem ends at the last cue word that leaves a short
    final phrase as the answer (a short sentence without one: before its last word); a 'question?
    answer' pair splits at the question mark, and its answer is the reply's value (`reply_value`)."""
    s = sentence.strip()
    if "?" in s[:-1]:
        q, _, a = s.partition("?")
        a = reply_value(a)
        return (q.strip() + "?", a) if a else None
    tokens = s.rstrip(".!").strip().split()
    for i in range(len(tokens) - 2, 1, -1):  # a stem of three words or more, a non-empty answer
        if len(tokens) - 1 - i > MAX_ANSWER_WORDS:
            break
        if tokens[i].lower() in get_language().cues:
            return " ".join(tokens[: i + 1]), " ".join(tokens[i + 1 :])
    # No cue word near the end: a short statement still ends with what it says of its subject
    # ("Ada Brook paints watercolours."), so its last word is asked for rather than nothing.
    if 4 <= len(tokens) <= SHORT_STATEMENT_WORDS:
        return " ".join(tokens[:-1]), tokens[-1]
    return None


def asked(sentence: str) -> str:
    """What a statement is about, without the value it gives: its cloze's stem ("The home port of
    the Aurelia is"; a Q/A note's question), or the whole sentence when it has no cloze. An
    adapter's routing keys: a question is about a trained fact when it asks what the fact is about,
    not when it happens to name the fact's value."""
    c = cloze(sentence)
    return c[0] if c else sentence.strip()


def router_keys(records: Sequence[Any], examples: Sequence[Example]) -> list[str]:
    """An adapter's routing keys, each once: what each of `records`' statements is about (`asked`),
    then the questions the model wrote about their subjects, which the adapter was trained to
    answer with the fact (`Example.key`). A question worded unlike the statement but like one of
    those is routed to the adapter that learnt to answer it."""
    facts = [s for r in records for s in statements(r)]
    current = set(facts)
    keys = [asked(s) for s in facts] + [x.key for x in examples if x.key and x.fact in current]
    return list(dict.fromkeys(keys))


def reply_value(reply: str) -> str:
    """The value a reply gives, as an answer must contain it: without a leading label, and without
    an opening made only of stopwords up to a cue word ("It is Tarn." -> "Tarn"; "Answer: 1998." ->
    "1998"; "Tarn." -> "Tarn"), so that a right answer worded otherwise ("Orvik's twin town is
    Tarn.") counts. Any other reply is its own value ("Ada Brook leads it")."""
    tokens = reply.strip().rstrip(".!").strip().split()
    if len(tokens) > 1 and tokens[0].endswith(":"):
        tokens = tokens[1:]
    stop = get_language().stopwords
    opening = 0
    for i, t in enumerate(tokens[:-1]):
        if t.lower() not in stop:
            break
        if i and t.lower() in get_language().cues:
            opening = i + 1
    return " ".join(tokens[opening:])


def subject_of(stem: str) -> str | None:
    """The first name a stem mentions (`Language.names`), if any."""
    found = get_language().names(stem)
    return found[0] if found else None


def questions(stem: str, contexts: Sequence[str] = ()) -> list[str]:
    """Surface forms of one cloze the student is trained on: the cloze, an instruction, the subject
    alone, and the cloze after unrelated text (`contexts`, e.g. sentences the base model wrote), so
    the fact is recalled in other surroundings too, not only after its own prompt."""
    out = [stem]
    if not stem.endswith("?"):
        out.append(f"Complete the sentence: {stem}")
    subj = subject_of(stem)
    if subj:
        out.append(f"What do you know about {subj}?")
    out += [f"{c.rstrip()} {stem}" for c in contexts]
    return out


def context_pool(exemplars: Sequence[Any]) -> list[str]:
    """Short sentences from the base model's exemplar answers: natural text unrelated to any fact."""
    pool = []
    for e in exemplars:
        for s in get_language().split_sentences((e.meta or {}).get("base_answer", ""))[:1]:
            if 4 <= len(s.split()) <= 20 and s.endswith("."):
                pool.append(s)
    return pool


def subject_stems(llm: Any, subjects: Sequence[str], *, per: int = STEMS_PER_SUBJECT, seed: int = 0,
                  batch_size: int = 16) -> dict[str, list[str]]:
    """Up to `per` distinct cloze stems per subject, written by the model: it continues the bare
    subject name (sampled; seeds torch's global generator with `seed`), and each continuation's
    first sentence is cut by `written_stem` ("Ada Brook" -> "Ada Brook was born in")."""
    import torch

    unique = list(dict.fromkeys(s for s in subjects if s))
    drafts = [s for s in unique for _ in range(per + 1)]  # one draw more than needed: some fail
    torch.manual_seed(seed)
    texts: list[str] = []
    for i in range(0, len(drafts), batch_size):
        part = drafts[i : i + batch_size]
        texts += generate(llm, [Prompt(s) for s in part], max_new_tokens=STEM_TOKENS, temperature=STEM_TEMPERATURE,
                          strip=False)
    out: dict[str, list[str]] = {s: [] for s in unique}
    for subj, more in zip(drafts, texts):
        stem = written_stem(subj, more)
        if stem and stem not in out[subj] and len(out[subj]) < per:
            out[subj].append(stem)
    return out


def written_stem(subject: str, continuation: str) -> str | None:
    """The first sentence of `subject + continuation`, cut after its first cue word that has at
    least two words between it and the subject, with words left after it: ("Ada Brook",
    " was born in Leeds in 1911. She") -> "Ada Brook was born in". A continuation that
    goes on with the subject's last word ("Orvik" + "ians") is no question about the subject."""
    first = get_language().split_sentences(" ".join((subject + continuation).split()))[:1]
    if not first or (continuation[:1].isalnum() and subject[-1:].isalnum()) or not first[0].startswith(subject):
        return None
    tokens = first[0].rstrip(".!?").split()
    skip = len(subject.split()) + 2
    for i in range(skip, len(tokens) - 1):
        if tokens[i].lower() in get_language().cues:
            return " ".join(tokens[: i + 1])
    return None


def probes_for(records: Sequence[Any]) -> list[Probe]:
    """One probe per statement with a cloze: the cloze as the question, its final phrase as answer.
    A record may carry its own held-out checks (meta "checks": {"question", "answer"}); those win."""
    out = []
    for r in records:
        checks = (r.meta or {}).get("checks") or {}
        if checks.get("question") and checks.get("answer"):
            out.append(Probe(checks["question"], checks["answer"], r.id, r.text))
            continue
        for s in statements(r):
            c = (f"{r.subject} {r.relation}", r.object) if r.subject and r.object else cloze(s)
            if c:
                out.append(Probe(c[0], c[1], r.id, s))
    return out


@dataclass
class RecordWork:
    """What the build made of one record (its examples, teacher distributions included) and its
    share of the figures; kept between versions so the teacher's work is not done again."""

    examples: list[Example]
    questions: int
    written: int
    from_teacher: int


def work_key(record: Any, settings: dict[str, Any], alone: bool) -> str:
    """What one record's `RecordWork` depends on: the record (id, text, fact, date), the build's
    settings (model, decoding, seed) and whether its subject is the only one of its kind in the
    domain (written questions are asked only then)."""
    import hashlib
    import json

    what = [record.id, record.text, record.subject, record.relation, record.object, record.valid_from, settings, alone]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def build(llm: Any, records: Sequence[Any], exemplars: Sequence[Any], *, copy_mix: float,
          max_new_tokens: int, replay: int, seed: int, batch_size: int = 16,
          done: dict[str, RecordWork] | None = None, contexts: int = ConsolidationConfig.contexts) -> TrainingSet:
    """The training set for `records` (a domain's current memory) plus replayed `exemplars`.

    `done`: the work of earlier builds by `work_key` (see `TrainingSet.works`); a record found
    there is taken as it is, so consolidating a domain again builds only its new records.
    """
    import random

    settings = {"model": getattr(llm, "name", None) or type(llm.model).__name__,
                "dtype": str(getattr(llm, "dtype", "")), "copy_mix": copy_mix, "max_new_tokens": max_new_tokens,
                "seed": seed, "contexts": contexts}
    pool = context_pool(exemplars)
    facts = [(r, s, (f"{r.subject} {r.relation}", r.object) if r.subject and r.object else cloze(s))
             for r in records for s in statements(r)]
    about = [r.subject or (subject_of(c[0]) if c else None) or "" for r, _, c in facts]
    # Written questions only for a subject with one fact here: "Acme Rail was founded in" has no
    # single answer among several statements about Acme Rail.
    once = {a for a in about if about.count(a) == 1}
    alone = {r.id: True for r in records}
    for (r, _, _), a in zip(facts, about):
        alone[r.id] = alone[r.id] and a in once
    keys = {r.id: work_key(r, settings, alone[r.id]) for r in records}
    done = done or {}
    todo = [(f, a) for f, a in zip(facts, about) if keys[f[0].id] not in done]
    from kupdate.consolidate.train import adapters_off

    # The teacher and the writer of questions are the base model: an adapter left active by an
    # earlier answer (the version serving now) is switched off.
    with adapters_off(llm.model):
        fresh = _build_records(llm, [f for f, _ in todo], [a for _, a in todo], once, pool, copy_mix=copy_mix,
                               max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, contexts=contexts)
    works = {keys[r.id]: done[keys[r.id]] if keys[r.id] in done else fresh[r.id] for r in records}
    examples = [x for r in records for x in works[keys[r.id]].examples]
    tok = llm.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    chosen = random.Random(seed).sample(list(exemplars), min(replay, len(exemplars)))
    replayed = []
    for e in chosen:
        base_answer = (e.meta or {}).get("base_answer")
        if base_answer:
            replayed.append(Example(_ids(tok, base_prompt(tok, e.text).text), _ids(tok, base_answer) + eos, "replay"))
    _soft_targets(llm, replayed, batch_size=batch_size)
    examples += replayed
    used = [works[keys[r.id]] for r in records]
    stats = {"records": len(records), "statements": len(facts), "questions": sum(w.questions for w in used),
             "written_questions": sum(w.written for w in used),
             "teacher_answers_used": sum(w.from_teacher for w in used), "replay": len(replayed),
             "examples": len(examples), "target_tokens": sum(len(x.target_ids) for x in examples),
             "records_reused": len(records) - len(fresh)}
    return TrainingSet(examples, probes_for(records), stats, works)


def build_for(llm: Any, records: Sequence[Any], exemplars: Sequence[Any], config: Any,
              done: dict[str, RecordWork] | None = None) -> TrainingSet:
    """`build` with the settings of a KB's `config` (its [generation] and [consolidation] tables)."""
    cfg, gen = config.consolidation, config.generation
    return build(llm, records, exemplars, copy_mix=gen.copy_mix, max_new_tokens=gen.max_new_tokens,
                 replay=cfg.replay, seed=cfg.seed, batch_size=cfg.batch_size, done=done, contexts=cfg.contexts)


def _ids(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _build_records(llm: Any, facts: list[tuple[Any, str, Any]], about: list[str], once: set[str], pool: list[str], *,
                   copy_mix: float, max_new_tokens: int, seed: int, batch_size: int,
                   contexts: int) -> dict[int, RecordWork]:
    """The examples of `facts` (record, statement, cloze), with the teacher's answers and
    distributions, by record id."""
    import random

    tok = llm.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    out: dict[int, RecordWork] = {}
    asked: list[tuple[str, str, str, Any, str]] = []  # (question, statement, cloze answer, record, key)
    cloze_at: set[int] = set()
    # Generation runs in larger batches than the forward passes (decoding steps are its cost).
    rows = max(batch_size, GENERATION_BATCH)
    written = subject_stems(llm, [a for a in about if a in once], seed=seed, batch_size=rows) if facts else {}
    for (r, s, c), subj in zip(facts, about):
        work = out.setdefault(r.id, RecordWork([], 0, 0, 0))
        body = _ids(tok, s) + eos
        work.examples.append(Example(body[:1], body[1:], "statement", fact=s))
        if c:
            # Each record's draws depend on the record alone, not on what else is built with it.
            rng = random.Random(f"{seed}:{r.id}:{s}")
            picked = rng.sample(pool, min(contexts + 1, len(pool)))
            cloze_at.add(len(asked))  # the first form asked is the cloze itself
            mine_asked = [(q, s, c[1], r, "") for q in questions(c[0], picked[:contexts])]
            mine = written.get(subj, [])
            # One written question after unrelated text too, as paraphrases often come.
            mine_asked += [(f"{picked[-1].rstrip()} {q}" if i == 0 and len(picked) > contexts else q, s, c[1], r, q)
                           for i, q in enumerate(mine)]
            asked += mine_asked
            work.questions += len(mine_asked)
            work.written += len(mine)
    # The teacher: the model with the statement as its only memory note.
    teacher_prompts = [memory_prompt(tok, q, [Note(r.id, s, r.valid_from or "")]) for q, s, _, r, _ in asked]
    answers = _teacher_answers(llm, teacher_prompts, [s for _, s, _, _, _ in asked], copy_mix=copy_mix,
                               max_new_tokens=max_new_tokens, batch_size=rows)
    made = []
    for i, ((q, s, want, r, key), tp, a) in enumerate(zip(asked, teacher_prompts, answers)):
        full = f"{tp.prefill} {a}".strip() if tp.prefill else a
        if hits(full, want):
            out[r.id].from_teacher += 1
        else:
            full = s
        asking = base_prompt(tok, q)
        x = Example(_ids(tok, asking.text), _ids(tok, full) + eos, "question", teacher=_ids(tok, tp.text),
                    check=(asking, want) if i in cloze_at else None, fact=s, key=key)
        out[r.id].examples.append(x)
        made.append(x)
    _soft_targets(llm, made, batch_size=batch_size)
    return out


def _teacher_answers(llm: Any, prompts: list[Any], sources: list[str], *, copy_mix: float,
                     max_new_tokens: int, batch_size: int) -> list[str]:
    out: list[str] = [""] * len(prompts)
    for part in length_batches([len(p.text) + len(p.prefill) for p in prompts], batch_size):
        # Each question copies from its own statement only.
        got = generate(llm, [prompts[i] for i in part], max_new_tokens=max_new_tokens, copy_mix=copy_mix,
                       row_sources=[[sources[i]] for i in part], first_line=True)
        for i, a in zip(part, got):
            out[i] = a
    return [a.splitlines()[0] if a else a for a in out]


def _soft_targets(llm: Any, examples: list[Example], *, batch_size: int) -> None:
    """Teacher (questions: memory prompt) or base-model (replay) top-k distributions over each
    example's target tokens, teacher-forced, with any adapter switched off."""
    import torch

    from kupdate.consolidate.step import pair_logits, shared_prefix
    from kupdate.consolidate.train import adapters_off

    model = llm.model
    with torch.no_grad(), adapters_off(model):
        heads_of = [x.teacher if x.teacher is not None else x.prompt_ids for x in examples]
        for part in length_batches([len(h) + len(x.target_ids) for h, x in zip(heads_of, examples)], batch_size):
            batch = [examples[i] for i in part]
            # The system message and template start the batch's prompts share run once (exact here).
            logits = pair_logits(model, [(heads_of[i], examples[i].target_ids) for i in part],
                                 pad=_pad_id(llm.tokenizer), device=llm.device,
                                 start=shared_prefix([heads_of[i] for i in part]))
            top = torch.topk(torch.log_softmax(logits.float(), -1), TOP_K, dim=-1)
            offset = 0
            for x in batch:
                n = len(x.target_ids)
                x.soft = (top.indices[offset : offset + n].cpu(), top.values[offset : offset + n].cpu())
                offset += n


def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
