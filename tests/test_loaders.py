"""Known-answer tests for kupdate.ingest.dates and kupdate.ingest.loaders.

Every InputError case writes a real file and checks the message names it (and the line).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from pathlib import Path

import pytest
from conftest import write

from kupdate.errors import InputError
from kupdate.ingest.dates import now_iso, parse_date
from kupdate.ingest.loaders import SUPPORTED, Document, expand_paths, load_file


def finishes(fn, timeout: float = 10.0):
    """Run fn in a daemon thread; fail (instead of hanging the suite) if it does not finish."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "did not finish: a symlink loop hangs the walk"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", "2024-01-01"),
        ("2024-05", "2024-05-01"),
        ("2024-05-06", "2024-05-06"),
        ("  2024-05-06 ", "2024-05-06"),
        ("2024-05-06T10:20:30Z", "2024-05-06T10:20:30+00:00"),
        ("2024-05-06t10:20:30z", "2024-05-06T10:20:30+00:00"),
        ("2024-05-06T12:20:30+02:00", "2024-05-06T10:20:30+00:00"),
        ("2024-05-06T12:20:30+0200", "2024-05-06T10:20:30+00:00"),
        ("2024-05-06T10:20:30.123456-05:30", "2024-05-06T15:50:30+00:00"),
        ("2024-05-06 10:20", "2024-05-06T10:20:00+00:00"),
        ("2024-05-06T10:20:30", "2024-05-06T10:20:30+00:00"),  # naive: taken as UTC
        ("2024-01-01T01:00:00+02:00", "2023-12-31T23:00:00+00:00"),  # crosses a year
        (2024, "2024-01-01"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.datetime(2024, 2, 29, 8, 0, 5, 999), "2024-02-29T08:00:05+00:00"),
        (
            dt.datetime(2024, 2, 29, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
            "2024-02-29T11:00:00+00:00",
        ),
    ],
)
def test_parse_date_normalises(value, expected):
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2024-13-01",
        "2024-02-30",
        "yesterday",
        "",
        "24-01-01",
        "20240101",
        "2024-1-5",
        "2024-05-06T25:00",
        "2024-05-06T10:00+02:75",
        True,
        3.5,
        0,
    ],
)
def test_parse_date_rejects(value):
    with pytest.raises(InputError) as info:
        parse_date(value, where="notes.md:3")
    assert str(info.value) == f"notes.md:3: invalid date {value!r}; use YYYY-MM-DD"


def test_parse_date_without_where_has_no_prefix():
    with pytest.raises(InputError, match=r"^invalid date 'soon'; use YYYY-MM-DD$"):
        parse_date("soon")


def test_normalised_dates_sort_in_time_order():
    chronological = [
        "2023",
        "2023-06",
        "2023-06-15",
        "2023-06-15T08:00:00+02:00",
        "2023-06-15T07:00:00Z",
        "2024",
    ]
    normalised = [parse_date(v) for v in chronological]
    assert sorted(normalised) == normalised


def test_now_iso_is_utc_in_datetime_format():
    value = now_iso()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00", value)
    parsed = dt.datetime.fromisoformat(value)
    assert abs((dt.datetime.now(dt.timezone(dt.timedelta(0))) - parsed).total_seconds()) < 60
    assert parse_date(value) == value  # round-trips


# ---------------------------------------------------------------- expand_paths


def test_supported_suffixes():
    assert SUPPORTED == (".txt", ".md", ".markdown", ".jsonl")


def test_directory_walk_is_sorted_skips_hidden_and_reports_unsupported(tmp_path):
    root = tmp_path / "docs"
    for rel in [
        "b.txt",
        "a.md",
        "sub/c.jsonl",
        "sub/z.markdown",
        "sub/d.pdf",
        "e.MD",
        ".hidden.md",
        ".git/x.md",
    ]:
        write(root / rel, "x")
    files, skipped = expand_paths([root])
    assert files == [(root / n).resolve() for n in ["a.md", "b.txt", "e.MD", "sub/c.jsonl", "sub/z.markdown"]]
    assert skipped == [((root / "sub/d.pdf").absolute(), "unsupported file type")]
    assert all(p.is_absolute() for p in files)


def test_directly_named_unsupported_file_is_an_error(tmp_path):
    pdf = write(tmp_path / "x.pdf", "x")
    with pytest.raises(InputError) as info:
        expand_paths([str(pdf)])
    assert str(info.value) == f"{pdf}: unsupported file type '.pdf'; kupdate reads .txt, .md and .jsonl"


def test_missing_path_and_empty_list(tmp_path):
    missing = str(tmp_path / "nope.md")
    with pytest.raises(InputError, match=re.escape(f"path not found: {missing!r}; check the path")):
        expand_paths([missing])
    with pytest.raises(InputError, match="no input paths"):
        expand_paths([])


def test_glob_expands_and_glob_without_match_is_an_error(tmp_path):
    for rel in ["docs/a.md", "docs/b.md", "docs/c.txt", "docs/deep/d.md"]:
        write(tmp_path / rel, "x")
    files, skipped = expand_paths([str(tmp_path / "docs/*.md")])
    assert files == [(tmp_path / "docs/a.md").resolve(), (tmp_path / "docs/b.md").resolve()]
    assert skipped == []
    files, _ = expand_paths([str(tmp_path / "docs/**/*.md")])
    assert [p.name for p in files] == ["a.md", "b.md", "d.md"]
    pattern = str(tmp_path / "docs/*.rst")
    with pytest.raises(InputError) as info:
        expand_paths([pattern])
    assert str(info.value) == f"no files match {pattern!r}; check the pattern"


def test_glob_matching_unsupported_files_skips_them(tmp_path):
    write(tmp_path / "a.md", "x")
    write(tmp_path / "b.pdf", "x")
    files, skipped = expand_paths([str(tmp_path / "*")])
    assert [p.name for p in files] == ["a.md"]
    assert skipped == [(tmp_path / "b.pdf", "unsupported file type")]


def test_relative_glob_and_literal_bracket_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "notes[1].md", "x")
    write(tmp_path / "sub/n.md", "x")
    files, _ = expand_paths(["notes[1].md"])  # exists literally: not treated as a pattern
    assert files == [(tmp_path / "notes[1].md").resolve()]
    files, _ = expand_paths(["**/*.md"])
    assert sorted(p.name for p in files) == ["n.md", "notes[1].md"]


def test_files_are_deduplicated(tmp_path):
    target = write(tmp_path / "docs/a.md", "x")
    os.symlink(target, tmp_path / "docs/link.md")
    files, _ = expand_paths([target, tmp_path / "docs", str(tmp_path / "docs/*.md")])
    assert files == [target.resolve()]


def test_bare_string_is_one_path(tmp_path):
    target = write(tmp_path / "a.txt", "x")
    assert expand_paths(str(target))[0] == [target.resolve()]


def test_symlink_loop_is_skipped_not_followed_forever(tmp_path):
    root = tmp_path / "docs"
    write(root / "a.md", "x")
    write(root / "sub/b.md", "x")
    os.symlink(root, root / "sub/loop")  # a dir linked to its parent
    os.symlink(root, root / "sub/loop2")
    files, skipped = finishes(lambda: expand_paths([root]))
    assert files == [(root / "a.md").resolve(), (root / "sub/b.md").resolve()]
    assert skipped == [(root / "sub/loop", "symlink loop"), (root / "sub/loop2", "symlink loop")]
    # Python's own recursive glob would follow these links without end.
    files, skipped = finishes(lambda: expand_paths([str(root / "**/*.md")]))
    assert [p.name for p in files] == ["a.md", "b.md"]


def test_symlinked_directory_is_followed(tmp_path):
    write(tmp_path / "real/a.md", "x")
    (tmp_path / "docs").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "docs/linked")
    files, skipped = expand_paths([tmp_path / "docs"])
    assert files == [(tmp_path / "real/a.md").resolve()]
    assert skipped == []


# ---------------------------------------------------------------- load_file: bad input


def raises_input_error(path: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_file(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_empty_and_whitespace_files(tmp_path):
    for name, content in [("empty.txt", b""), ("blank.md", b"  \n\t\r\n"), ("bom.txt", b"\xef\xbb\xbf\n")]:
        path = write(tmp_path / name, content)
        assert raises_input_error(path) == f"{path}: file is empty; nothing to ingest"


def test_binary_file(tmp_path):
    path = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert raises_input_error(path).startswith(f"{path}: looks like a binary file, not text;")


def test_utf16_file(tmp_path):
    path = write(tmp_path / "wide.txt", "hello".encode("utf-16"))
    assert "re-save the file as UTF-8" in raises_input_error(path)


def test_invalid_utf8_names_line_and_byte(tmp_path):
    path = write(tmp_path / "bad.txt", b"ok\n\xff\xfe")
    assert raises_input_error(path) == f"{path}:2: invalid UTF-8 at byte 3; re-save the file as UTF-8"
    # The byte offset counts from the start of the file, BOM included.
    path = write(tmp_path / "bad2.md", b"\xef\xbb\xbfline one\nline two\nbad \xc3( here\n")
    assert raises_input_error(path).startswith(f"{path}:3: invalid UTF-8 at byte 25;")


def test_too_large(tmp_path):
    path = write(tmp_path / "big.txt", "x" * 100)
    message = raises_input_error(path, max_bytes=10)
    assert "100 bytes" in message and "10-byte limit" in message and "max_file_mb" in message
    assert "kupdate.toml" in message


def test_missing_file_cannot_be_read(tmp_path):
    path = tmp_path / "gone.txt"
    assert raises_input_error(path).startswith(f"{path}: cannot read (")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.txt", "x")
    path.chmod(0)
    try:
        message = raises_input_error(path)
    finally:
        path.chmod(0o644)
    assert message.startswith(f"{path}: cannot read (") and "check its permissions" in message


def test_permission_error_message_even_as_root(tmp_path, monkeypatch):
    # The chmod test above is skipped for root; this covers the same message everywhere.
    path = write(tmp_path / "secret.txt", "x")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert raises_input_error(path) == f"{path}: cannot read (Permission denied); check its permissions"


def test_load_file_rejects_unsupported_suffix(tmp_path):
    path = write(tmp_path / "x.pdf", "text")
    assert "unsupported file type '.pdf'" in raises_input_error(path)


def test_unterminated_front_matter(tmp_path):
    path = write(tmp_path / "note.md", "---\ndate: 2024-01-01\n\nBody without closing.\n")
    message = raises_input_error(path)
    assert message.startswith(f"{path}:1: front matter") and "closing '---'" in message


def test_front_matter_bad_date_names_line(tmp_path):
    path = write(tmp_path / "note.md", "---\ntitle: x\ndate: 2024-13-45\n---\nBody.\n")
    assert raises_input_error(path) == f"{path}:3: invalid date '2024-13-45'; use YYYY-MM-DD"


def test_front_matter_malformed_line(tmp_path):
    path = write(tmp_path / "note.md", "---\ntitle: x\njust words\n---\nBody.\n")
    assert raises_input_error(path).startswith(f"{path}:3: front matter line is not 'key: value'")


def test_front_matter_without_body_is_empty(tmp_path):
    path = write(tmp_path / "note.md", "---\ntitle: x\n---\n\n  \n")
    assert raises_input_error(path).startswith(f"{path}: file is empty; nothing to ingest")


@pytest.mark.parametrize(
    ("line3", "expected"),
    [
        ("{not json", "malformed JSON line (Expecting property name enclosed in double quotes at column 2)"),
        ("[1, 2]", "malformed JSON line (expected an object, got list)"),
        ('"text"', "malformed JSON line (expected an object, got str)"),
        ('{"date": "2024"}', "no 'text'"),
        ('{"text": 5}', "field 'text' must be a string, got int"),
        ('{"text": "x", "domain": ["a"]}', "field 'domain' must be a string, got list"),
        ('{"subject": "Acme", "relation": "CEO"}', "'object' missing"),
        ('{"text": "x", "object": "Bob"}', "'subject', 'relation' missing"),
        ('{"subject": "Acme", "relation": "CEO", "object": " "}', "'object' missing"),
        ('{"text": "x", "date": "2024-02-30"}', "invalid date '2024-02-30'"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, line3, expected):
    path = write(tmp_path / "data.jsonl", '{"text": "one"}\n\n' + line3 + '\n{"text": "four"}\n')
    message = raises_input_error(path)
    assert message.startswith(f"{path}:3: ") and expected in message


# ---------------------------------------------------------------- load_file: good input


def test_txt_is_one_document(tmp_path):
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbfFirst line.\r\nSecond line.\r\n\r\n")
    assert load_file(path) == [Document(text="First line.\nSecond line.", source=str(path.resolve()))]


def test_relative_path_gives_absolute_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.txt", "Hello.")
    [doc] = load_file(Path("a.txt"))
    assert doc.source == str(tmp_path.resolve() / "a.txt")


def test_markdown_front_matter(tmp_path):
    text = (
        "---\n"
        "# a comment\n"
        'title: "Quarterly: results"\n'
        "date: 2024-03\n"
        "domain: finance  # inline comment\n"
        "source: 'https://example.com/q1'\n"
        "author: Ada\n"
        "\n"
        "tags:\n"
        "  - one\n"
        "  - two\n"
        "---\n"
        "\n"
        "# Q1\n\nRevenue rose.\n"
    )
    [doc] = load_file(write(tmp_path / "q1.md", text))
    assert doc.text == "# Q1\n\nRevenue rose."
    assert doc.valid_from == "2024-03-01"
    assert doc.domain == "finance"
    assert doc.source == "https://example.com/q1"
    assert doc.meta == {"title": "Quarterly: results", "author": "Ada", "tags": ["one", "two"]}
    assert doc.line is None and doc.subject is None


def test_markdown_without_front_matter(tmp_path):
    path = write(tmp_path / "plain.markdown", "Just text.\n---\nA rule above.\n")
    [doc] = load_file(path)
    assert doc.text == "Just text.\n---\nA rule above."
    assert doc.valid_from is None and doc.meta == {} and doc.source == str(path.resolve())


def test_jsonl_documents(tmp_path):
    lines = [
        {"text": " Alpha. ", "date": "2024-05-06T12:00:00+02:00", "domain": "news", "tag": "x"},
        None,  # blank line: skipped, but still counted for line numbers
        {"subject": "Acme", "relation": "has CEO", "object": "Bob", "date": 2023, "source": "wiki"},
        {"text": "Custom text", "subject": "Acme", "relation": "HQ", "object": "Paris"},
        {"text": "Line\u2028separator inside a string"},
    ]
    raw = "\n".join("   " if obj is None else json.dumps(obj, ensure_ascii=False) for obj in lines) + "\n"
    path = write(tmp_path / "facts.jsonl", raw)
    docs = load_file(path)
    source = str(path.resolve())
    assert docs == [
        Document(
            text="Alpha.",
            source=source,
            valid_from="2024-05-06T10:00:00+00:00",
            domain="news",
            line=1,
            meta={"tag": "x"},
        ),
        Document(
            text="Acme has CEO Bob.",
            source="wiki",
            valid_from="2023-01-01",
            subject="Acme",
            relation="has CEO",
            object="Bob",
            line=3,
        ),
        Document(text="Custom text", source=source, subject="Acme", relation="HQ", object="Paris", line=4),
        Document(text="Line\u2028separator inside a string", source=source, line=5),
    ]
