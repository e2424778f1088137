"""Query analysis: what retrieval, the gate and the router need to know about a question.

Computed once per question. Nothing here decides anything: the terms with their IDF over the KB,
the names the question mentions (a feature; a lower-case question has none and is judged on its
terms), and the asking sentence of a question of several.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kupdate.language import Language, get_language
from kupdate.text import plain


def is_choice_list(sentence: str) -> bool:
    """A sentence listing alternatives: three or more short items separated by semicolons."""
    items = [i for i in sentence.split(";") if i.strip()]
    return len(items) >= 3 and all(len(i.split()) <= 8 for i in items)


def choices_of(sentence: str) -> tuple[str, ...]:
    """The alternatives a choice list offers, without a leading label ("Pick one: a; b; c." ->
    ("a", "b", "c"))."""
    items = [i.strip() for i in sentence.strip().rstrip(".").split(";")]
    if items and ":" in items[0]:
        items[0] = items[0].split(":", 1)[1].strip()
    return tuple(i for i in items if i)


# A last sentence with fewer content terms ("Why?") says too little to be scored alone.
MIN_FOCUS_TERMS = 2


def bm25_idf(df: int, n_docs: int) -> float:
    """BM25's IDF, always positive; a term no memory contains weighs the most."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


@dataclass
class Query:
    """One question as the answer path sees it."""

    text: str
    terms: list[str]
    names: set[str]
    idf: dict[str, float]
    lang: Language
    # The question less any list of alternatives: what is embedded and searched for.
    about: str = ""
    # The last sentence of a question of several ("<some context>. Which city hosts it?"): the
    # asking part, also scored alone so that the context's words do not hide the subject.
    focus: Query | None = None
    # The alternatives the question offers, when it lists them: the answer is one of them.
    choices: tuple[str, ...] = ()
    # Each alternative's terms that the question does not use itself (a memory repeating the
    # question's words says nothing about which alternative is right), with their IDF over the KB.
    choice_terms: tuple[tuple[str, ...], ...] = ()
    choice_idf: dict[str, float] = field(default_factory=dict)
    # How many memories hold each term (the KB's document frequencies; `learn_names`).
    df: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, question: str, df: Mapping[str, int], n_docs: int, lang: Language | None = None) -> Query:
        lang = lang or get_language()
        text = plain(question)
        sentences = lang.split_sentences(text)
        # A list of alternatives ("A; B; C; D") names candidate answers, not what is asked about:
        # only one of them can be in the memory that answers.
        asked = " ".join(s for s in sentences if not is_choice_list(s)) or text
        ts = lang.terms(asked)
        idf = {t: bm25_idf(df.get(t, 0), n_docs) for t in ts}
        asks = [s for s in sentences if not is_choice_list(s)]
        asking = asks[-1] if asks else ""
        focus_terms = lang.terms(asking)
        focus_names = lang.name_terms(asking) & set(focus_terms)
        # The names that say what is asked about are the asking sentence's: a context before it
        # ("<a story about someone>. Which team does he play for?") may name people the memory
        # telling the story never repeats. A question naming nothing is judged on its terms.
        choices = next((choices_of(s) for s in sentences if is_choice_list(s)), ())
        asked_stems = lang.stems(asked)
        own = tuple(tuple(t for t in lang.terms(c) if lang.stem(t) not in asked_stems) for c in choices)
        choice_idf = {t: bm25_idf(df.get(t, 0), n_docs) for terms in own for t in terms}
        query = cls(text, ts, focus_names, idf, lang, about=asked, choices=choices, choice_terms=own,
                    choice_idf=choice_idf, df={t: df.get(t, 0) for t in ts})
        if len(asks) > 1 and len(focus_terms) >= MIN_FOCUS_TERMS:
            query.focus = cls(asking, focus_terms, focus_names, {t: idf[t] for t in focus_terms}, lang, about=asking,
                              choices=choices, choice_terms=own, choice_idf=choice_idf)
        return query

    @classmethod
    def for_store(cls, question: str, store: object, lang: Language | None = None) -> Query:
        """`build` with the document frequencies and size of `store`'s knowledge."""
        lang = lang or get_language()
        ts = lang.terms(plain(question))
        return cls.build(question, store.document_frequencies(ts), store.count("knowledge"), lang)  # type: ignore[attr-defined]

    @property
    def caseless(self) -> bool:
        """Typed without a single capital: its case says nothing about which words are names."""
        return not any(ch.isupper() for ch in self.text)

    def learn_names(self, texts: Sequence[str]) -> None:
        """Give a question typed without capitals the names a cased one would have: its terms that
        the knowledge writes as names, inside a name in most of the `texts` (the memories
        retrieved for it) that hold them; with the question's words next to one of those that no
        memory holds at all ("acme robotics" when only "Acme" is known: another subject, as
        "Acme Robotics" typed with capitals would say). Sets `names` (and the asking sentence's) in
        place; a question with names or with capitals keeps its own."""
        if self.names or not self.caseless:
            return
        held: dict[str, int] = {}
        named: dict[str, int] = {}
        for text in texts:
            inside = self.lang.name_terms(text)
            for t in set(self.terms) & set(self.lang.terms(text)):
                held[t] = held.get(t, 0) + 1
                named[t] = named.get(t, 0) + (t in inside)
        found = {t for t, n in held.items() if 2 * named[t] > n}
        words = self.lang.words(self.about or self.text)
        grew = bool(found)
        while grew:
            grew = False
            for i, w in enumerate(words):
                near = {words[j] for j in (i - 1, i + 1) if 0 <= j < len(words)}
                if w not in found and w in self.df and self.df[w] == 0 and near & found:
                    found.add(w)
                    grew = True
        self.names = found
        if self.focus is not None:
            self.focus.names = found & set(self.focus.terms)

    @property
    def asking(self) -> str | None:
        """The last sentence scored alone, if any (embedded apart by retrieval)."""
        return self.focus.text if self.focus else None
