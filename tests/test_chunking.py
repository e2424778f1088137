"""Known-answer and property tests for kupdate.ingest.chunking."""

from __future__ import annotations

import pytest

from kupdate.ingest.chunking import chunk_text, count_tokens_default, split_sentences

PROSE = """# Annual report

Dr. Smith joined Acme Corp. in 2019, e.g. after a long stint at the U.S. Department of Energy.
Revenue grew 3.5 percent to $4.2 million! Was that enough? The board thought so.

## Outlook

Mr. J. R. Tolkien, i.e. the author, cited Fig. 3 and No. 7 in his notes. Prices rose vs. last year.
She said "Not yet." Then she left... Nobody followed. The plant in St. Louis reopened in March.
"""

PROSE_SENTENCES = [
    "# Annual report",
    "Dr. Smith joined Acme Corp. in 2019, e.g. after a long stint at the U.S. Department of Energy.",
    "Revenue grew 3.5 percent to $4.2 million!",
    "Was that enough?",
    "The board thought so.",
    "## Outlook",
    "Mr. J. R. Tolkien, i.e. the author, cited Fig. 3 and No. 7 in his notes.",
    "Prices rose vs. last year.",
    'She said "Not yet."',
    "Then she left...",
    "Nobody followed.",
    "The plant in St. Louis reopened in March.",
]


def numbered(n: int) -> str:
    return " ".join(f"Sentence number {i} has a few words in it." for i in range(n))


# ---------------------------------------------------------------- split_sentences


def test_split_sentences_known_answer():
    assert split_sentences(PROSE) == PROSE_SENTENCES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \n\n  ", []),
        ("One. Two. Three.", ["One.", "Two.", "Three."]),
        ("Pi is 3.14159. It is irrational.", ["Pi is 3.14159.", "It is irrational."]),
        ("Version 2.0.1 shipped. Next.", ["Version 2.0.1 shipped.", "Next."]),
        ("Call Dr. Who now.", ["Call Dr. Who now."]),
        ("Paragraph one without a stop\n\nParagraph two", ["Paragraph one without a stop", "Paragraph two"]),
        ("hard\nwrapped   line. Next one.", ["hard wrapped line.", "Next one."]),
        ("Intro\n# Heading\nBody text.", ["Intro", "# Heading", "Body text."]),
        ("#hashtag is not a heading. Ok.", ["#hashtag is not a heading.", "Ok."]),
        ("1. First item. More.\n2. Second item", ["1. First item.", "More.", "2. Second item"]),
        ("- one\n- two", ["- one", "- two"]),
        ("Wait... what? Yes!", ["Wait... what?", "Yes!"]),
        ("It ended (finally.) Then more.", ["It ended (finally.)", "Then more."]),
        ("On Jan. 5 we met. Said no. Then left.", ["On Jan. 5 we met.", "Said no.", "Then left."]),
        ("Line one.\r\nLine two.", ["Line one.", "Line two."]),
        # typed without capitals: the marks alone decide, abbreviations still hold
        ("when did it open? options: a; b; c.", ["when did it open?", "options: a; b; c."]),
        ("the u.s. team won. dr. lee said so. it rained", ["the u.s. team won.", "dr. lee said so.", "it rained"]),
        # with capitals, a lower-case word after a mark goes on the same sentence
        ('He asked "why?" and left. Then more.', ['He asked "why?" and left.', "Then more."]),
        ('The song "Why not?" was a hit.', ['The song "Why not?" was a hit.']),
    ],
)
def test_split_sentences_cases(text, expected):
    assert split_sentences(text) == expected


# ---------------------------------------------------------------- count_tokens_default


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("Hello, world!", 4), ("U.S.", 4), ("3.5 percent", 4), ("don't", 3), ("  many   spaces ", 2)],
)
def test_count_tokens_default(text, expected):
    assert count_tokens_default(text) == expected


# ---------------------------------------------------------------- chunk_text


def test_short_text_is_one_normalised_chunk():
    assert chunk_text("  Hello   there.\n\nSecond   paragraph.  ") == ["Hello there. Second paragraph."]
    assert chunk_text(PROSE) == [" ".join(PROSE_SENTENCES)]


def test_empty_text_has_no_chunks():
    assert chunk_text("") == []
    assert chunk_text(" \n\t ") == []


@pytest.mark.parametrize("overlap", [-1, 20, 21])
def test_bad_overlap_is_a_value_error(overlap):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("Some text.", max_tokens=20, overlap=overlap)


def test_bad_max_tokens_is_a_value_error():
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_text("Some text.", max_tokens=0, overlap=0)


@pytest.mark.parametrize(
    ("max_tokens", "overlap"), [(12, 0), (12, 11), (25, 5), (40, 10), (60, 30), (200, 32)]
)
def test_chunks_respect_budget_and_cover_every_sentence(max_tokens, overlap):
    text = PROSE + "\n\n" + numbered(40)
    chunks = chunk_text(text, max_tokens=max_tokens, overlap=overlap)
    assert chunks and all(chunks)
    assert all(count_tokens_default(c) <= max_tokens for c in chunks)
    assert all(c == c.strip() and "  " not in c for c in chunks)
    for sentence in split_sentences(text):
        if count_tokens_default(sentence) <= max_tokens:
            assert any(sentence in c for c in chunks), sentence
        else:  # split at word boundaries: every word still appears, in order across chunks
            assert all(any(word in c for c in chunks) for word in sentence.split())


def test_overlap_carries_trailing_sentences():
    sentences = split_sentences(numbered(20))
    per_sentence = count_tokens_default(sentences[0])  # 10 tokens each
    assert per_sentence == 10
    chunks = chunk_text(numbered(20), max_tokens=35, overlap=12)
    assert len(chunks) > 1
    for prev, nxt in zip(chunks, chunks[1:]):
        last = split_sentences(prev)[-1]
        assert nxt.startswith(last + " ")  # one 10-token sentence fits in 12 overlap tokens
        assert split_sentences(nxt)[1] not in prev  # and the chunk moves on afterwards
    assert chunks[0] == " ".join(sentences[:3])
    assert chunks[1] == " ".join(sentences[2:5])


def test_zero_overlap_partitions_the_text():
    text = numbered(20)
    chunks = chunk_text(text, max_tokens=35, overlap=0)
    assert " ".join(chunks) == " ".join(split_sentences(text))
    assert chunks[0] == " ".join(split_sentences(text)[:3])


def test_overlap_sentence_too_big_for_overlap_is_not_carried():
    chunks = chunk_text(numbered(6), max_tokens=30, overlap=9)  # each sentence is 10 tokens
    assert " ".join(chunks) == " ".join(split_sentences(numbered(6)))


def test_long_sentence_is_split_on_word_boundaries():
    words = [f"w{i}" for i in range(50)]
    sentence = " ".join(words) + "."
    chunks = chunk_text(sentence, max_tokens=8, overlap=0)
    assert all(count_tokens_default(c) <= 8 for c in chunks)
    assert " ".join(chunks) == sentence  # nothing lost, no word cut in half
    assert all(set(c.rstrip(".").split()) <= set(words) for c in chunks)


def test_over_long_word_is_split_at_characters():
    chunks = chunk_text("x" * 25, max_tokens=10, overlap=0, count_tokens=len)
    assert chunks == ["x" * 10, "x" * 10, "x" * 5]


def test_custom_counter_that_is_not_additive_is_still_respected():
    # A real tokenizer adds special tokens and need not be additive across a join.
    def with_specials(text: str) -> int:
        return count_tokens_default(text) + 2 + text.count(". ")

    text = PROSE + "\n\n" + numbered(30)
    chunks = chunk_text(text, max_tokens=30, overlap=8, count_tokens=with_specials)
    assert all(with_specials(c) <= 30 for c in chunks)
    assert all(any(s in c for c in chunks) for s in split_sentences(text) if with_specials(s) <= 30)


def test_abbreviations_never_split_across_chunks():
    text = " ".join(
        f"Dr. Who met Mr. Smith in the U.S. on day {i}, e.g. at 3.5 p.m. sharp." for i in range(30)
    )
    chunks = chunk_text(text, max_tokens=40, overlap=10)
    for chunk in chunks:
        assert chunk.startswith("Dr. Who met"), chunk
        assert chunk.endswith("sharp."), chunk


def test_chunking_is_deterministic():
    text = PROSE + numbered(25)
    assert chunk_text(text, max_tokens=30, overlap=8) == chunk_text(text, max_tokens=30, overlap=8)
