"""A seeded synthetic update stream: fictional organisations whose facts change over dated rounds.

The names are invented (syllable words the base model cannot know), so a right answer can only
come from the stream. Round 0 publishes a profile of every organisation, several facts per
document; each later round is a batch of short dated news items changing some of them (a chief
executive replaced, a head office moved...), two changes of one organisation sometimes in one item,
some mentioning the value they replace. Every statement stays in memory: stale ones compete with
fresh ones at retrieval. A share of facts (`stable`) never changes after round 0.

Probes per fact: a question, a paraphrase, and a locality question of the same shape about an
invented neighbour organisation that the stream never mentions. The stream also carries general
control questions (including real companies' CEOs and head offices) whose answers must not change.

    stream = synthetic_stream(60, rounds=3, seed=0)
    stream.cases_at(2)[0]   # EditCase(prompt='Who is the CEO of Quenvora Robotics?', fresh=..., stale=...)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from kupdate.bench.datasets import EditCase
from kupdate.bench.stream import Round, Stream, round_dates


@dataclass(frozen=True)
class Attribute:
    """A changeable fact about an organisation, how documents state it and how questions ask it."""

    name: str
    kind: str  # the value generator: person, city, product, partner
    question: str
    paraphrase: str
    profile: tuple[str, ...]  # round-0 sentences; "{e}" may become "the company" mid-document
    news: tuple[str, ...]  # change sentences; "{old}" is the value replaced


ATTRIBUTES = (
    Attribute("ceo", "person", "Who is the CEO of {e}?", "Who runs {e} as chief executive?",
              ("{e} is led by chief executive {v}.", "{v} is the chief executive of {e}.", "The CEO of {e} is {v}."),
              ("{e} named {v} as its new chief executive.", "{v} is the new CEO of {e}.",
               "{v} took over as chief executive of {e}, succeeding {old}.",
               "The board of {e} appointed {v} as chief executive.")),
    Attribute("headquarters", "city", "Where is {e} headquartered?", "In which city does {e} have its head office?",
              ("{e} is headquartered in {v}.", "{e} has its head office in {v}."),
              ("{e} moved its headquarters to {v}.",
               "{e} relocated its head office from {old} to {v}.",
               "{e} is now headquartered in {v}.")),
    Attribute("flagship", "product", "What is the flagship product of {e}?",
              "Which product does {e} sell as its flagship?",
              ("The flagship product of {e} is the {v}.", "{e} sells the {v} as its flagship product."),
              ("{e} made the {v} its new flagship product.",
               "The {v} replaced the {old} as the flagship product of {e}.",
               "{e} launched the {v}, now its flagship product.")),
    Attribute("partner", "partner", "Who is the main partner of {e}?", "Which company does {e} mainly work with?",
              ("{e} works mainly with its partner {v}.", "The main partner of {e} is {v}."),
              ("{e} signed a main partnership with {v}.",
               "{v} replaced {old} as the main partner of {e}.",
               "{e} now works mainly with its new partner {v}.")),
    Attribute("chair", "person", "Who chairs the board of {e}?", "Who is the chair of the board at {e}?",
              ("{v} chairs the board of {e}.", "The board of {e} is chaired by {v}."),
              ("{e} elected {v} as chair of its board.",
               "{v} succeeded {old} as chair of the board of {e}.",
               "{v} became chair of the board of {e}.")),
)

STYLES = ("news", "uniform")
FILLERS = (
    "The company did not disclose financial terms.",
    "{e} employs about {k} people.",
    "The announcement was made at a press briefing on Monday.",
    "Analysts expect the change to take effect within weeks.",
    "{e} reported higher sales in the last quarter.",
    "A spokesperson declined to comment further.",
)

SECTORS = ("Robotics", "Labs", "Foods", "Aerospace", "Analytics", "Textiles", "Energy", "Biotech",
           "Marine", "Instruments", "Motors", "Software")
PRODUCTS = ("drone", "scanner", "router", "kiln", "sensor", "tractor", "battery", "headset", "printer",
            "pump", "turbine", "loom", "microscope", "cart", "espresso machine", "e-bike", "satellite", "modem")
PARTNER_SUFFIXES = ("Group", "Holdings", "Partners", "Industries", "Systems", "Capital", "Trading")
FIRST_NAMES = ("Ilsa", "Renzo", "Odile", "Tomas", "Mirela", "Anouk", "Bram", "Kasia", "Lionel", "Yara",
               "Hugo", "Petra", "Sanne", "Dario", "Elif", "Jonas", "Marta", "Nils", "Oona", "Pavel",
               "Rosa", "Soren", "Talia", "Viktor", "Wren", "Zofia", "Amara", "Cosmin", "Greta", "Ivo")
SURNAME_ENDINGS = ("sen", "ova", "wick", "ard", "ani", "ez", "berg", "holm", "stone", "ley", "ski", "mont")
CITIES = ("Ghent", "Porto", "Trondheim", "Lyon", "Tampere", "Graz", "Bilbao", "Leipzig", "Utrecht", "Turin",
          "Krakow", "Aarhus", "Bergen", "Brno", "Cork", "Dresden", "Eindhoven", "Gdansk", "Genoa",
          "Gothenburg", "Linz", "Malmo", "Nantes", "Ljubljana", "Seville", "Tallinn", "Vilnius", "Zagreb",
          "Basel", "Bologna", "Bordeaux", "Valencia", "Riga", "Oulu", "Uppsala", "Leuven", "Rennes",
          "Pilsen", "Aberdeen", "Cluj", "Coimbra", "Kaunas", "Lille", "Montpellier", "Salzburg", "Tartu")

# Unrelated questions whose answers must not change; some ask real companies what the stream asks
# fictional ones (same shape, other entities). None is among the shipped gate exemplars.
CONTROLS = (
    "Who is the CEO of Apple?", "Where is Nokia headquartered?", "Who founded Microsoft?",
    "What is the flagship product of Tesla?", "Where is Volkswagen headquartered?",
    "Who chairs the board of Berkshire Hathaway?", "Who founded Amazon?", "Where is IKEA headquartered?",
    "What is the capital of Spain?", "What is the capital of Egypt?", "Which river flows through Paris?",
    "What is the largest ocean on Earth?", "How many legs does an insect have?",
    "What is the chemical symbol for silver?", "Who painted the Mona Lisa?", "Who wrote Hamlet?",
    "What is the boiling point of water in Fahrenheit?", "How many days are in a week?",
    "What is the main ingredient of guacamole?", "Which animal is known as the king of the jungle?",
    "What language is spoken in Portugal?", "What is 6 times 7?", "The capital of Germany is",
    "The currency of the United Kingdom is the", "The largest country by area is",
    "Which planet is closest to the Sun?", "Who discovered penicillin?", "What is the capital of Norway?",
)


class _Namer:
    """Invented, unique names: syllable words the base model has never seen."""

    ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "qu", "r",
              "s", "st", "t", "tr", "v", "z", "th")
    VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
    CODAS = ("", "n", "r", "x", "l", "nd", "rk", "s", "v", "m", "th")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int = 2) -> str:
        r = self.rng
        text = "".join(r.choice(self.ONSETS) + r.choice(self.VOWELS) for _ in range(syllables))
        return (text + r.choice(self.CODAS)).capitalize()

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used and name not in CITIES:
                self.used.add(name)
                return name
        raise RuntimeError("ran out of invented names")  # not reached below millions of facts

    def organisation(self, sector: str) -> str:
        return self.unique(lambda: f"{self.word(self.rng.choice((2, 3)))} {sector}")

    def person(self) -> str:
        r = self.rng
        return self.unique(lambda: f"{r.choice(FIRST_NAMES)} {self.word(r.choice((1, 2)))}{r.choice(SURNAME_ENDINGS)}")

    def value(self, kind: str, previous: list[str]) -> str:
        if kind == "person":
            return self.person()
        if kind == "city":
            return self.rng.choice([c for c in CITIES if c not in previous])
        if kind == "product":
            return self.unique(lambda: f"{self.word(2)} {self.rng.choice(PRODUCTS)}")
        return self.unique(lambda: f"{self.word(2)} {self.rng.choice(PARTNER_SUFFIXES)}")


@dataclass
class _Fact:
    entity: str
    neighbour: str
    attribute: Attribute
    values: dict[int, str]  # round -> value stated in that round

    @property
    def key(self) -> str:
        return f"{self.entity}/{self.attribute.name}"


def _plan(n: int, rounds: int, stable: float, rng: random.Random, namer: _Namer) -> list[_Fact]:
    """n facts (entity x attribute), each with a value in round 0 and changes in later rounds."""
    facts: list[_Fact] = []
    for _ in range(math.ceil(n / len(ATTRIBUTES))):
        sector = rng.choice(SECTORS)
        entity, neighbour = namer.organisation(sector), namer.organisation(sector)
        for attr in rng.sample(ATTRIBUTES, len(ATTRIBUTES)):
            facts.append(_Fact(entity, neighbour, attr, {}))
    facts = facts[:n]
    unchanged = set(rng.sample(range(n), round(stable * n)))
    for i, fact in enumerate(facts):
        changes = [] if i in unchanged else [r for r in range(1, rounds) if rng.random() < 0.5]
        if i not in unchanged and not changes:
            changes = [rng.randrange(1, rounds)]
        for r in [0, *changes]:
            fact.values[r] = namer.value(fact.attribute.kind, list(fact.values.values()))
    return facts


def _sentence(template: str, fact: _Fact, r: int, subject: str) -> str:
    earlier = [v for q, v in sorted(fact.values.items()) if q < r]
    text = template.format(e=subject, v=fact.values[r], old=earlier[-1] if earlier else "")
    return text[:1].upper() + text[1:]


def _document(facts: list[_Fact], r: int, rng: random.Random, style: str) -> str:
    """One document stating the round-`r` values of `facts` (all about one organisation)."""
    if style == "uniform":
        return " ".join(_sentence(f.attribute.profile[0], f, r, f.entity) for f in facts)
    sentences = []
    for j, fact in enumerate(facts):
        templates = fact.attribute.profile if r == 0 else fact.attribute.news
        has_old = any(q < r for q in fact.values)
        template = rng.choice([t for t in templates if "{old}" not in t or has_old])
        # Later sentences of a document often say "the company", as news items do.
        subject = "the company" if j and rng.random() < 0.5 else fact.entity
        sentences.append(_sentence(template, fact, r, subject))
    if rng.random() < 0.4:
        sentences.append(rng.choice(FILLERS).format(e=facts[0].entity, k=rng.randrange(40, 4000, 10)))
    return " ".join(sentences)


def _round_documents(facts: list[_Fact], r: int, date: str, rng: random.Random, style: str) -> tuple[list, dict]:
    """Round r's documents (JSONL objects) and the document text that states each fact."""
    by_entity: dict[str, list[_Fact]] = {}
    for fact in facts:
        if r in fact.values:
            by_entity.setdefault(fact.entity, []).append(fact)
    groups: list[list[_Fact]] = []
    for items in by_entity.values():
        # Profiles hold one to three facts each; news items one, sometimes two changes at once.
        while items:
            size = 1 if style == "uniform" else rng.choice((1, 2, 3)) if r == 0 else rng.choice((1, 1, 2))
            groups.append(items[:size])
            items = items[size:]
    rng.shuffle(groups)
    docs, stated = [], {}
    for k, group in enumerate(groups):
        text = _document(group, r, rng, style)
        docs.append({"text": text, "date": date, "source": f"newswire/{date}/{k:05d}"})
        stated.update({f.key: text for f in group})
    return docs, stated


def synthetic_stream(n: int, rounds: int = 3, seed: int = 0, stable: float = 0.2, style: str = "news") -> Stream:
    """`n` facts about invented organisations over `rounds` dated rounds (see the module docstring).

    `style="uniform"` is a diagnostic: one fact per document, every version of a fact stated in the
    same sentence (only the value differs), as in a fact register rather than a news stream.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    if n < 1 or rounds < 2:
        raise ValueError(f"a synthetic stream needs n >= 1 and at least 2 rounds, got n={n}, rounds={rounds}")
    if not 0 <= stable < 1:
        raise ValueError(f"stable must be in [0, 1), got {stable}")
    rng = random.Random(seed)
    namer = _Namer(rng)
    facts = _plan(n, rounds, stable, rng, namer)
    out = []
    for r, date in enumerate(round_dates(rounds)):
        docs, stated = _round_documents(facts, r, date, rng, style)
        cases = []
        for fact in facts:
            if r not in fact.values:
                continue
            earlier = [v for q, v in sorted(fact.values.items()) if q < r]
            a = fact.attribute
            cases.append(EditCase(
                statement=stated[fact.key], prompt=a.question.format(e=fact.entity), fresh=fact.values[r],
                stale=earlier[-1] if earlier else None, previous=earlier,
                rephrase=a.paraphrase.format(e=fact.entity), locality_prompt=a.question.format(e=fact.neighbour),
                key=fact.key, round=r))
        out.append(Round(r, date, docs, cases))
    controls = rng.sample(CONTROLS, min(len(CONTROLS), max(4, math.ceil(n / 3))))
    return Stream("synthetic", out, controls, {"n": n, "rounds": rounds, "seed": seed, "stable": stable, "style": style})
