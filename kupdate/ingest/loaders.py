"""Find input files and turn them into `Document`s, rejecting bad input with a precise message.

Every problem a user can fix (missing path, binary file, bad UTF-8, malformed JSONL line...) is
an `InputError` whose one-line message names the file, the line where there is one, and what to
do. The whole file is rejected on the first problem: half-ingesting a file would leave the
knowledge base in a state the user did not ask for.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kupdate.errors import InputError
from kupdate.ingest.dates import parse_date

__all__ = ["SUPPORTED", "Document", "expand_paths", "load_file"]

SUPPORTED = (".txt", ".md", ".markdown", ".jsonl")
_SUPPORTED_HINT = "kupdate reads .txt, .md and .jsonl"
_GLOB_CHARS = frozenset("*?[")
_BINARY_SNIFF = 8192  # bytes inspected for NUL: the same heuristic git and grep use
_BOM = b"\xef\xbb\xbf"
_TRIPLE = ("subject", "relation", "object")
_JSONL_FIELDS = frozenset(("text", "date", "domain", "source", *_TRIPLE))


@dataclass
class Document:
    """One unit of input text with provenance. `source` is the resolved absolute path unless the file
    names one (front matter / JSONL field); `line` is the JSONL line number (None for .txt/.md)."""

    text: str
    source: str
    valid_from: str | None = None
    domain: str | None = None
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    line: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Yield (file, None) for every regular file under `root`, or (path, reason) for a problem.

    Sorted for deterministic ingest order; hidden entries (.git, .DS_Store) are skipped silently.
    Symlinks are followed, but each directory is identified by (st_dev, st_ino): one already on
    the current path is a loop and is reported, one seen elsewhere was already listed.
    """
    root_stat = root.stat()
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    # Explicit stack instead of recursion: no depth limit, and each entry carries its ancestry.
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(root, frozenset(visited))]
    while stack:
        directory, ancestry = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            yield directory, f"cannot read directory ({exc.strerror or exc})"
            continue
        subdirs: list[tuple[Path, frozenset[tuple[int, int]]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                st = os.stat(path)  # follows symlinks
            except OSError as exc:
                yield path, "broken symlink" if entry.is_symlink() else f"cannot stat ({exc.strerror})"
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestry:
                    yield path, "symlink loop"
                elif key not in visited:
                    visited.add(key)
                    subdirs.append((path, ancestry | {key}))
            elif stat.S_ISREG(st.st_mode):
                yield path, None
            else:
                yield path, "not a regular file"
        # Reversed so the stack pops sub-directories in sorted order (depth-first, like `find`).
        stack.extend(reversed(subdirs))


def _glob_match(pattern: list[str], parts: list[str]) -> bool:
    """Match path components against glob components, `**` standing for any number of them."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_match(pattern[1:], parts[1:])


def _expand_glob(pattern: str) -> list[tuple[Path, str | None]]:
    """Expand a glob to sorted (path, problem) pairs; paths may be files or directories."""
    parts = Path(pattern).parts
    if "**" not in parts:
        # Bounded by the pattern's depth, so the stdlib is safe here.
        return [(Path(m), None) for m in sorted(glob.glob(pattern, recursive=True))]
    # The stdlib's recursive `**` follows symlinked directories with no loop check, so a loop can
    # make it run (nearly) forever. Walk the fixed prefix with our loop-safe walker instead.
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    if not base.is_dir():
        return []
    rest = list(parts[fixed:])
    # Keep a matching file, or a file under a matching directory (glob would list the directory).
    matches = [(path, list(path.relative_to(base).parts), reason) for path, reason in _walk(base)]
    return [
        (p, r) for p, rel, r in matches if any(_glob_match(rest, rel[:k]) for k in range(1, len(rel) + 1))
    ]


def expand_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Turn files, directories and glob patterns into (files to load, skipped files with reason).

    Files are absolute resolved paths, each once, in the order given (directories sorted).
    A directly named file must have a supported suffix; inside directories and glob matches,
    other files are skipped and reported instead, since mixed folders are normal.
    """
    if isinstance(paths, (str, Path)):  # a bare string is a Sequence too; take it as one path
        paths = [paths]
    if not paths:
        raise InputError("no input paths given; name at least one file, directory or glob pattern")
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def take(path: Path, *, named: str | None = None) -> None:
        if path.suffix.lower() not in SUPPORTED:  # NOTES.MD from a Windows share is still Markdown
            if named is not None:
                suffix = path.suffix or "(none)"
                raise InputError(f"{named}: unsupported file type '{suffix}'; {_SUPPORTED_HINT}")
            skipped.append((path.absolute(), "unsupported file type"))
            return
        resolved = path.resolve()
        if resolved not in seen:  # the same file via two routes (symlink, overlapping args)
            seen.add(resolved)
            files.append(resolved)

    for raw in paths:
        text = str(raw)
        path = Path(text)
        # A literal name wins over a pattern: "notes[1].md" may simply exist.
        if _GLOB_CHARS & set(text) and not os.path.lexists(text):
            found = _expand_glob(text)
            if not found:
                raise InputError(f"no files match {text!r}; check the pattern")
        elif not path.exists():
            raise InputError(f"path not found: {text!r}; check the path")
        elif not path.is_dir():
            take(path, named=text)
            continue
        else:
            found = [(path, None)]
        for match, reason in found:
            for item, why in _walk(match) if reason is None and match.is_dir() else [(match, reason)]:
                if why is None and not item.exists():
                    why = "broken symlink"  # glob lists dangling links; they cannot be read
                if why is None:
                    take(item)
                else:
                    skipped.append((item.absolute(), why))
    return files, skipped


def _read_text(path: Path, name: str, max_bytes: int) -> str:
    """Read a file as UTF-8 text with '\\n' line ends, or raise an InputError saying why not."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{name}: not a regular file; name a text file")
        if st.st_size > max_bytes:
            raise InputError(
                f"{name}: file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit; "
                "split it or raise max_file_mb in kupdate.toml"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc}); check its permissions") from exc
    offset = 0
    if raw.startswith(_BOM):  # Windows editors add it; it is not content
        raw, offset = raw[len(_BOM) :], len(_BOM)
    if not raw.strip():
        raise InputError(f"{name}: file is empty; nothing to ingest")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{name}: looks like UTF-16 text; re-save the file as UTF-8")
    if b"\x00" in raw[:_BINARY_SNIFF]:
        raise InputError(f"{name}: looks like a binary file, not text; convert it to .txt or .md first")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, at = raw.count(b"\n", 0, exc.start) + 1, exc.start + offset
        raise InputError(f"{name}:{line}: invalid UTF-8 at byte {at}; re-save the file as UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():  # e.g. only non-ASCII whitespace such as U+3000
        raise InputError(f"{name}: file is empty; nothing to ingest")
    return text


def _front_matter_value(raw: str) -> str:
    """A scalar from a `key: value` line: quotes stripped, or a trailing ` # comment` dropped."""
    value = raw.strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end > 0:
            return value[1:end]
    return value.split(" #", 1)[0].rstrip()


def _load_markdown(text: str, name: str, source: str) -> Document:
    """Markdown with optional `---` front matter of simple `key: value` lines (no PyYAML)."""
    lines = text.split("\n")
    doc = Document(text="", source=source)
    body_start = 0
    if lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise InputError(f"{name}:1: front matter '---' is never closed; add a closing '---' line")
        body_start = end + 1
        last_key: str | None = None
        for lineno, line in enumerate(lines[1:end], start=2):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            # A YAML list under an empty key (`tags:` then `- a`) is common; keep it as a list.
            if stripped.startswith("-") and last_key is not None:
                items = doc.meta[last_key] if isinstance(doc.meta[last_key], list) else []
                doc.meta[last_key] = [*items, _front_matter_value(stripped[1:])]
                continue
            key, sep, raw_value = stripped.partition(":")
            if not sep or not key.strip():
                raise InputError(f"{name}:{lineno}: front matter line is not 'key: value'; fix or remove it")
            key, value = key.strip(), _front_matter_value(raw_value)
            last_key = None
            if key.lower() == "date":
                doc.valid_from = parse_date(value, where=f"{name}:{lineno}")
            elif key.lower() == "domain":
                doc.domain = value or None
            elif key.lower() == "source":
                doc.source = value or source
            else:  # title and anything else travel as metadata
                key = "title" if key.lower() == "title" else key
                doc.meta[key] = value
                last_key = key if value == "" else None
    doc.text = "\n".join(lines[body_start:]).strip()
    if not doc.text:
        raise InputError(f"{name}: file is empty; nothing to ingest (only front matter, no body)")
    return doc


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: field '{key}' must be a string, got {type(value).__name__}; fix the line")
    return value


def _load_jsonl(text: str, name: str, source: str) -> list[Document]:
    """One Document per non-blank line; each line is a JSON object."""
    docs: list[Document] = []
    # split("\n"), not splitlines(): U+2028 etc. are legal inside JSON strings and must not split.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
            problem = "" if isinstance(obj, dict) else f"expected an object, got {type(obj).__name__}"
        except json.JSONDecodeError as exc:
            problem = f"{exc.msg} at column {exc.colno}"
        if problem:
            raise InputError(f"{where}: malformed JSON line ({problem}); fix or remove the line")
        # An empty member counts as absent, so `"object": ""` is reported as missing, not stored.
        triple = {key: (_optional_str(obj, key, where) or "").strip() or None for key in _TRIPLE}
        given = [key for key in _TRIPLE if triple[key] is not None]
        if given and len(given) < 3:
            missing = ", ".join(f"'{k}'" for k in _TRIPLE if k not in given)
            raise InputError(f"{where}: 'subject', 'relation' and 'object' go together; {missing} missing")
        body = _optional_str(obj, "text", where)
        if body is None or not body.strip():
            if not given:
                raise InputError(f"{where}: no 'text' (or 'subject', 'relation' and 'object'); add it")
            body = f"{triple['subject']} {triple['relation']} {triple['object']}."
        date = obj.get("date")
        docs.append(
            Document(
                text=body.strip(),
                source=_optional_str(obj, "source", where) or source,
                valid_from=None if date is None else parse_date(date, where=where),
                domain=_optional_str(obj, "domain", where),
                line=lineno,
                meta={key: value for key, value in obj.items() if key not in _JSONL_FIELDS},
                **triple,
            )
        )
    return docs


def load_file(path: Path, *, max_bytes: int = 50_000_000) -> list[Document]:
    """Load one .txt/.md/.markdown/.jsonl file into Documents (one per file, or per JSONL line).

    Raises `InputError` for an unsupported suffix, an unreadable, oversized, empty, binary or
    non-UTF-8 file, unterminated front matter, a bad date, or a malformed JSONL line.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputError(f"{name}: unsupported file type '{path.suffix or '(none)'}'; {_SUPPORTED_HINT}")
    text = _read_text(path, name, max_bytes)
    source = str(path.resolve())
    if suffix == ".jsonl":
        return _load_jsonl(text, name, source)
    if suffix in (".md", ".markdown"):
        return [_load_markdown(text, name, source)]
    return [Document(text=text.strip(), source=source)]
