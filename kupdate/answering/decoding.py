"""Memory-aware decoding: batched greedy generation with a copy distribution over the notes.

A small model handed a fact in its prompt often still answers from its weights (SmolLM2-135M gives
the new value only ~40% of the time in chat style). Prompts answer completion-style questions as a
cloze (`kupdate.answering.prompt`), and `CopyMix` mixes a copy distribution into the model's:
tokens that continue a span of a current memory (the longest n-gram of the answer so far that occurs
in one decides) gain probability, so the model copies the fresh value instead of drifting to its
stale one. Outdated memories are never a copy source. With the gate shut none of this runs: the
prompt and decoding are exactly the base model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from kupdate.answering.prefill import prefilled_cache, prefix_cache, shared_prefix
from kupdate.answering.prompt import Prompt
from kupdate.language import Language, get_language

MAX_NGRAM = 4
# Rows per generation call for offline work (consolidation's teacher answers, written questions,
# checks and evaluation). The base model's answers run to the token limit, so decoding steps, not
# padding, are the cost, and a step of 64 rows costs far less than four of 16: 64 CounterFact
# questions took 12.5 s in batches of 64 and 23.2 s in batches of 16 (SmolLM2, 2 CPU cores).
GENERATION_BATCH = 64


def length_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices of `lengths` in batches of at most `size`, shortest first: rows of similar length
    share a batch, so padding (compute spent on nothing, the cost of a CPU pass) stays small.
    Callers put each batch's results back at its indices."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + size] for i in range(0, len(order), size)]


class CopyMix:
    """Logits processor mixing a copy distribution over the memories into the model's (kNN-LM style).

    `sources` holds the token ids of each current memory, best first, each ending with EOS so that a
    fully copied statement ends the answer. `starts[row]` is where that row's answer region
    (prefill + generated tokens) begins. At each step the longest suffix of the answer (up to
    MAX_NGRAM tokens) found in a source gives the candidate next tokens, weighted by their source's
    rank (1, 1/2, 1/3, ...) so the most relevant memory wins a tie. The mixture weight is `mix` for a
    match of two or more tokens and 60% of it for a single shared content word, which steers less.
    """

    def __init__(self, sources: Sequence[Sequence[int]], starts: Sequence[int], mix: float,
                 key: Callable[[int], str] | None = None,
                 row_sources: Sequence[Sequence[Sequence[int]]] | None = None,
                 echo: Callable[[list[int], int], int | None] | None = None, ends: Sequence[int] = (),
                 slots: Sequence[dict[int, float]] | None = None, stopwords: frozenset[str] = frozenset()) -> None:
        self.starts = list(starts)
        self.mix = mix
        self.stopwords = stopwords or get_language().stopwords
        # `echo(answer, row)` (not None): the answer so far only restates the row's question ("The
        # coach of the Orvik Rovers"; the count of its content words restated), so it may not end yet
        # (`ends`: EOS and sentence-final tokens): copying "Ada Brook took over from Li Wei as coach
        # of the Orvik Rovers." must not stop at the memory's full stop before the value is said.
        self.echo, self.ends = echo, list(ends)
        # `slots[row]`: tokens starting a value of the row's memories; where an echoing answer
        # meets no memory n-gram ("The CEO of X is"), they are what it copies next.
        self.slots = slots
        # Matching compares token keys (by default the ids; `generate` passes lower-cased token
        # text), so "The glass" still meets "the Glasshook" in a memory.
        self.key = key or str
        # Each row copies from the shared `sources`, or from its own list in `row_sources`.
        rows = row_sources if row_sources is not None else [sources] * len(self.starts)
        self.rows = [([list(s) for s in srcs], [[self.key(t) for t in s] for s in srcs]) for srcs in rows]
        self.sources, self.keyed = self.rows[0] if self.rows else ([], [])

    def candidates(self, answer: list[int], row: int = 0) -> tuple[dict[int, float], int]:
        """Next tokens after the longest suffix of `answer` found in a source, with their weights."""
        sources, keyed = self.rows[row] if self.rows else ([], [])
        if not answer:  # the answer's first token: start where the best-ranked notes start
            return {src[0]: 1.0 / (rank + 1) for rank, src in reversed(list(enumerate(sources))) if src}, MAX_NGRAM
        answer_keys = [self.key(t) for t in answer[-MAX_NGRAM:]]
        for n in range(min(MAX_NGRAM, len(answer_keys)), 0, -1):
            suffix = answer_keys[-n:]
            if n == 1 and (suffix[0] in self.stopwords or not suffix[0].isalnum()):
                break  # one shared 'the' or '.' is no evidence of copying
            found: dict[int, float] = {}
            for rank, (src, keys) in enumerate(zip(sources, keyed)):
                for j in range(len(src) - n):
                    if keys[j : j + n] == suffix:
                        found[src[j + n]] = found.get(src[j + n], 0.0) + 1.0 / (rank + 1)
            if found:
                return found, n
        return {}, 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row in range(input_ids.shape[0]):
            answer = input_ids[row, self.starts[row] :].tolist()
            found, n = self.candidates(answer, row)
            found = {t: w for t, w in found.items() if t < scores.shape[1]}
            restated = self.echo(answer, row) if self.echo is not None else None
            if restated is not None:
                if self.ends:
                    scores[row, self.ends] = float("-inf")
                    found = {t: w for t, w in found.items() if t not in self.ends}
                # A value only once the question's subject or attribute has been restated
                # ("The CEO of X is" -> the value; "The" -> let the model begin its sentence).
                if (not found and restated and self.slots and self.slots[row]
                        and not (answer and answer[-1] in self.slots[row])):
                    found, n = {t: w for t, w in self.slots[row].items() if t < scores.shape[1]}, MAX_NGRAM
            if not found:
                continue
            mix = self.mix if n >= 2 else 0.6 * self.mix
            copy = torch.zeros_like(scores[row])
            copy[list(found)] = torch.tensor(list(found.values()), dtype=scores.dtype, device=scores.device)
            probs = (1 - mix) * torch.softmax(scores[row], dim=-1) + mix * copy / copy.sum()
            scores[row] = torch.log(probs.clamp_min(1e-12))
        return scores


def generate(llm: Any, prompts: Sequence[Prompt], *, max_new_tokens: int,
             copy_sources: Sequence[str] = (), copy_mix: float = 0.0, first_line: bool | Sequence[bool] = False,
             row_sources: Sequence[Sequence[str]] | None = None, avoid: Sequence[str] = (),
             row_avoid: Sequence[Sequence[str]] | None = None, temperature: float = 0.0, strip: bool = True,
             lang: Language | None = None) -> list[str]:
    """Greedy answers for `prompts`, batched (each row padded after the start all rows share); the
    prefill is not returned.
    `temperature` > 0 samples instead (top-p 0.95; seed torch beforehand for repeatable draws).
    `strip=False` keeps the answers' leading space (whether the first token starts a new word).

    `first_line`: stop each answer at its first line break once it has text (what the metrics
    score); greedy decoding makes that line the same as in the full answer; one flag per prompt
    stops only those rows there (rows of both kinds share one call). `row_sources`: each
    prompt's own copy sources instead of the shared `copy_sources` (a row with none decodes as the
    base model does, so rows with and without memories share one call). `avoid`: names of replaced
    values, never proposed as the answer's value (`CopyMix` slots); `row_avoid`: each row's own."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    tok = llm.tokenizer
    lines = [first_line] * len(prompts) if isinstance(first_line, bool) else list(first_line)
    if len(lines) != len(prompts):
        raise ValueError(f"first_line: {len(lines)} flags for {len(prompts)} prompts")
    rows, starts = [], []
    for p in prompts:
        head = tok(p.text, add_special_tokens=False)["input_ids"]
        tail = tok(p.prefill, add_special_tokens=False)["input_ids"] if p.prefill else []
        rows.append(head + tail)
        starts.append(len(head))
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # The tokens every row starts with (the chat template and system message) are run once, and the
    # rows' padding goes after them: [shared][pad...][own tokens] (positions follow the mask).
    shared = shared_prefix([r[:head] for r, head in zip(rows, starts)])  # within the prompts, not a cloze prefill
    input_ids = torch.tensor([r[:shared] + [pad] * (width - len(r)) + r[shared:] for r in rows], device=llm.device)
    mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * (len(r) - shared) for r in rows],
                        device=llm.device)
    processors = LogitsProcessorList()
    if (copy_sources or row_sources) and copy_mix > 0:
        starts = [s + width - len(r) for s, r in zip(starts, rows)]
        texts = list(row_sources) if row_sources is not None else [list(copy_sources)] * len(prompts)
        avoids = list(row_avoid) if row_avoid is not None else [avoid] * len(prompts)
        processors.append(_copy_mix(tok, prompts, starts, texts, copy_mix, avoids, lang or get_language()))
    with torch.no_grad():
        cache = prefilled_cache(llm.model, rows, shared, width, pad, llm.device) if len(rows) > 1 else {}
        if not cache and shared:
            cache = prefix_cache(llm.model, input_ids[:1, :shared], len(rows))
        out = llm.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            **cache,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            **({"temperature": temperature, "top_p": 0.95, "top_k": 0} if temperature > 0 else {}),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([FirstLine(tok, width, lines)] if any(lines) else []),
            pad_token_id=pad,
        )
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    return [t.strip() for t in texts] if strip else texts


class FirstLine:
    """Stopping criterion: a row is done once its answer has a non-blank line followed by a break.
    `rows`: True for every row (default), or one flag per row (the others run to their end)."""

    def __init__(self, tok: Any, start: int, rows: bool | Sequence[bool] = True) -> None:
        self.tok, self.start, self.rows = tok, start, rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = [self.rows] * len(input_ids) if isinstance(self.rows, bool) else self.rows
        texts = self.tok.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([on and t.lstrip().find("\n") > 0 for on, t in zip(rows, texts)], device=input_ids.device)


def value_names(question: str, sources: Sequence[str], avoid: Sequence[str] = (),
                lang: Language | None = None) -> list[tuple[str, float]]:
    """Names the memories give that the question does not, with their memory's rank weight
    (1, 1/2, ...): the values an answer restating the question goes on with. Names in `avoid` (values
    a fresher memory replaced) are left out.

    ("Who coaches the Orvik Rovers?", ["Ada Brook took over from Li Wei as coach of the Orvik
    Rovers."], ["Li Wei"]) -> [("Ada Brook", 1.0)]
    """
    lang = lang or get_language()
    asked = set(lang.words(question))
    barred = {n.lower() for n in avoid}
    return [(name, 1.0 / (rank + 1)) for rank, source in enumerate(sources) for name in lang.names(source)
            if name.lower() not in barred and not set(lang.words(name)) & asked]


def _copy_mix(tok: Any, prompts: Sequence[Prompt], starts: list[int], texts: Sequence[Sequence[str]],
              mix: float, avoids: Sequence[Sequence[str]], lang: Language) -> CopyMix:
    """The `CopyMix` of a batch: each row's memories as token ids, whether its answer so far only
    echoes its question, and its slots: the first tokens of the names its memories give that the
    question does not (and that are not replaced values), by memory rank."""
    def encode(sources: Sequence[str]) -> list[list[int]]:
        return [tok(" " + s.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for s in sources]

    stopwords = lang.stopwords
    asked = [set(lang.words(p.question)) | stopwords for p in prompts]
    key = _token_key(tok)
    slots = []
    for p, sources, avoid in zip(prompts, texts, avoids):
        slot: dict[int, float] = {}
        for name, weight in value_names(p.question, sources, avoid, lang):
            # A first piece that is a stopword (" An" of "Annika") or no word at all would not be
            # continued: the copy does not follow a single stopword; the model spells such names itself.
            for t in tok(" " + name, add_special_tokens=False)["input_ids"][:1]:
                if key(t) not in stopwords and key(t).isalnum():
                    slot[t] = slot.get(t, 0.0) + weight
        slots.append(slot)

    def echo(answer: list[int], row: int) -> int | None:
        """None once the answer says a word the question did not; else how many of the
        question's content words it has restated so far."""
        said = set(lang.words(tok.decode(answer, skip_special_tokens=True)))
        if not asked[row] - stopwords or not said <= asked[row]:
            return None
        return len(said - stopwords)

    per_row = [encode(s) for s in texts]
    return CopyMix(per_row[0] if per_row else [], starts, mix, key=key, row_sources=per_row,
                   echo=echo, ends=_end_ids(tok), slots=slots, stopwords=stopwords)


def _end_ids(tok: Any) -> list[int]:
    """EOS and the single-token sentence ends ('.', '!', '?', a line break) of `tok`."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for text in (".", "!", "?", "\n", ".\n"):
        enc = tok(text, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(enc[0])
    return sorted(ids)


def _token_key(tok: Any) -> Callable[[int], str]:
    """Token id -> its text lower-cased without surrounding spaces (cached per call)."""

    @cache
    def key(token: int) -> str:
        return tok.decode([token]).strip().lower()

    return key
