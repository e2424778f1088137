"""IPython magics: `%kupdate VERB ...` and the `%%ask` cell magic (`%load_ext kupdate`).

    %kupdate open my-kb                  # switch KB (also bound to the variable `kb`)
    %kupdate ingest docs/ --domain orgs
    %kupdate ask Who leads Acme Rail?
    %kupdate ask --no-memory Who leads Acme Rail?
    %kupdate search Acme headquarters
    %kupdate status
    %kupdate consolidate --if-due            # also: --domain D, --force
    run = %kupdate consolidate               # the ConsolidationRun (reports, skipped)

    %%ask --as-of 2024-01-01
    Who leads Acme Rail?

A line magic ending in "?" would be read by IPython as a help request (`Rail?` -> "Object
not found"); `protect_questions` hands such `%kupdate` lines to the magic untouched.

The KB is the notebook's `kb` variable when it holds a KnowledgeBase, else the one `%kupdate open`
opened, else `KUPDATE_KB` (what the kupdate kernel sets), else the default KB. Errors are one
line (IPython's UsageError), never a traceback: ingested data and typos are not bugs.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from kupdate.errors import USER_ERRORS

USAGE = """Usage: %kupdate VERB ...
  open [PATH]                                    switch knowledge base (bound to `kb`)
  ingest PATH... [--domain D] [--as-of DATE] [--skip-bad]
  ask [--no-memory] [--no-adapter] [--as-of DATE] [--domain D] QUESTION
  search [-k N] [--as-of DATE] [--domain D] QUERY
  status
  consolidate [--domain D] [--if-due] [--force]   distil memory into per-domain adapters; returns the run
Cell magic: %%ask [--no-memory] [--no-adapter] [--as-of DATE] [--domain D], with the question as the cell body."""

ASK_OPTIONS = ({"--no-memory", "--no-adapter"}, {"--as-of", "--domain"})
SEARCH_OPTIONS = (set(), {"-k", "--top", "--as-of", "--domain"})


class _HelpShown(Exception):
    """argparse printed --help; nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(message or f"{self.prog}: invalid arguments")
        raise _HelpShown


def leading_options(text: str, flags: set[str], valued: set[str], where: str) -> tuple[dict[str, Any], str]:
    """Options at the start of `text`, and the rest verbatim (a question may hold quotes: What's ...)."""
    opts: dict[str, Any] = {}
    rest = text.strip()
    while rest.startswith("-"):
        token, tail = re.match(r"(\S+)\s*(.*)", rest, re.S).groups()  # type: ignore[union-attr]
        if token == "--":
            rest = tail
            break
        name, eq, value = token.partition("=")
        if name in flags and not eq:
            opts[name] = True
        elif name in valued:
            if not eq:
                if not tail:
                    raise UsageError(f"{where}: {name} needs a value")
                value, tail = re.match(r"(\S+)\s*(.*)", tail, re.S).groups()  # type: ignore[union-attr]
            opts[name] = value
        else:
            known = ", ".join(sorted(flags | valued)) or "none"
            raise UsageError(f"{where}: unknown option {name} (options: {known})")
        rest = tail.strip()
    if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"":
        rest = rest[1:-1]
    return opts, rest.strip()


@magics_class
class KupdateMagics(Magics):
    """`%kupdate` and `%%ask`."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._kb: Any = None  # the KB these magics opened (closed when another replaces it)

    # -- which KB ------------------------------------------------------------------------------
    def current_kb(self) -> Any:
        from kupdate.kb import KnowledgeBase

        bound = self.shell.user_ns.get("kb")
        if isinstance(bound, KnowledgeBase):
            return bound
        if self._kb is None:
            self._kb = KnowledgeBase.open(None)
            self.shell.user_ns.setdefault("kb", self._kb)
        return self._kb

    def open_kb(self, path: str | None) -> Any:
        """Open `path` (default: KUPDATE_KB, else the default KB) and bind it to `kb`."""
        from kupdate.kb import KnowledgeBase

        new = KnowledgeBase.open(path or None)
        if self._kb is not None and self._kb is not new:
            self._kb.close()
        self._kb = new
        self.shell.user_ns["kb"] = new
        return new

    # -- magics --------------------------------------------------------------------------------
    @line_magic("kupdate")
    def kupdate(self, line: str) -> Any:
        verb, rest = ([*line.split(None, 1), "", ""])[:2]
        handler = getattr(self, f"_verb_{verb}", None)
        if not verb or verb in ("help", "-h", "--help"):
            print(USAGE)
            return None
        if handler is None:
            raise UsageError(f"%kupdate: unknown verb {verb!r}; choose from open, ingest, ask, search, "
                             "status, consolidate (%kupdate help)")
        try:
            return handler(rest)
        except _HelpShown:
            return None
        except USER_ERRORS as exc:
            raise UsageError(str(exc)) from None

    @cell_magic("ask")
    def ask_cell(self, line: str, cell: str) -> Any:
        """%%ask [--no-memory] [--no-adapter] [--as-of DATE] [--domain D]: the cell body is the question."""
        opts, extra = leading_options(line, *ASK_OPTIONS, where="%%ask")
        if extra:
            raise UsageError(f"%%ask: unexpected {extra!r} on the magic line; the question goes in the cell body")
        try:
            return self._ask(cell.strip(), opts)
        except USER_ERRORS as exc:
            raise UsageError(str(exc)) from None

    # -- verbs ---------------------------------------------------------------------------------
    def _ask(self, question: str, opts: dict[str, Any]) -> Any:
        if not question:
            raise UsageError("no question given; e.g. %kupdate ask Who leads Acme Rail?")
        return self.current_kb().ask(question, memory=not opts.get("--no-memory", False),
                                     adapter=not opts.get("--no-adapter", False),
                                     as_of=opts.get("--as-of"), domain=opts.get("--domain"))

    def _verb_ask(self, rest: str) -> Any:
        opts, question = leading_options(rest, *ASK_OPTIONS, where="%kupdate ask")
        return self._ask(question, opts)

    def _verb_search(self, rest: str) -> Any:
        from kupdate.jupyter.display import SearchResults

        opts, query = leading_options(rest, *SEARCH_OPTIONS, where="%kupdate search")
        if not query:
            raise UsageError("no query given; e.g. %kupdate search Acme headquarters")
        k = opts.get("-k") or opts.get("--top")
        if k is not None and not str(k).isdigit():
            raise UsageError(f"%kupdate search: -k needs a whole number, not {k!r}")
        found = self.current_kb().search(query, k=int(k) if k else None, domain=opts.get("--domain"),
                                         as_of=opts.get("--as-of"))
        return SearchResults(found, query=query)

    def _verb_ingest(self, rest: str) -> None:
        from kupdate.jupyter.display import ingest_text

        p = _Parser(prog="%kupdate ingest", add_help=True)
        p.add_argument("paths", nargs="+", help="files, folders or globs")
        p.add_argument("--domain")
        p.add_argument("--as-of", dest="as_of")
        p.add_argument("--skip-bad", action="store_true")
        a = p.parse_args(_split(rest))
        report = self.current_kb().ingest(a.paths, domain=a.domain, as_of=a.as_of, skip_bad=a.skip_bad)
        print(ingest_text(report))

    def _verb_status(self, rest: str) -> None:
        from kupdate.jupyter.display import status_text

        _Parser(prog="%kupdate status").parse_args(_split(rest))
        print(status_text(self.current_kb().status()))

    def _verb_open(self, rest: str) -> None:
        p = _Parser(prog="%kupdate open")
        p.add_argument("path", nargs="?", help="KB folder (default: $KUPDATE_KB, else the default KB)")
        kb = self.open_kb(p.parse_args(_split(rest)).path)
        print(f"Opened knowledge base at {kb.path} ({kb.store.count('knowledge')} knowledge records); "
              "it is `kb`.")

    def _verb_consolidate(self, rest: str) -> Any:
        """Prints one line per domain (trained or skipped) and returns the `ConsolidationRun`."""
        from kupdate.jupyter.display import consolidation_text

        p = _Parser(prog="%kupdate consolidate")
        p.add_argument("--domain")
        p.add_argument("--if-due", dest="if_due", action="store_true",
                       help="only domains the policy says are due ([consolidation] min_new_records, min_interval)")
        p.add_argument("--force", action="store_true", help="consolidate even when not due or nothing is new")
        a = p.parse_args(_split(rest))
        run = self.current_kb().consolidate(domain=a.domain, if_due=a.if_due, force=a.force, progress=True)
        print(consolidation_text(run))
        return run


_MAGIC_LINE = re.compile(r"^(\s*)%kupdate\s+(.*?)\s*$", re.S)


def protect_questions(lines: list[str]) -> list[str]:
    """Input transformer: turn `%kupdate ask Who leads X?` into a direct magic call.

    IPython's help syntax (`name?`) runs after this and would otherwise swallow every question.
    `run_line_magic` still expands `{var}` and `$var` as a `%` line would.
    """
    out = []
    for line in lines:
        m = _MAGIC_LINE.match(line)
        if m and m.group(2).endswith("?"):
            line = f"{m.group(1)}get_ipython().run_line_magic('kupdate', {m.group(2)!r})\n"
        out.append(line)
    return out


def load(ipython: Any) -> None:
    """Register the magics and the `?` transformer (what `%load_ext kupdate` does)."""
    ipython.register_magics(KupdateMagics)
    # A run's reports hold every loss and metric: shown as `Out`, one line says what it holds.
    ipython.display_formatter.formatters["text/plain"].for_type_by_name(
        "kupdate.consolidate.run", "ConsolidationRun", lambda run, p, cycle: p.text(repr(run)))
    if protect_questions not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(protect_questions)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot parse {text!r}: {exc}") from None


def open_startup_kb(shell: Any) -> str | None:
    """Open the kernel's KB (`KUPDATE_KB`) as `kb`; returns the problem instead of raising."""
    import os

    from kupdate.paths import ENV_KB

    magics = shell.magics_manager.registry.get("KupdateMagics")
    if magics is None or not os.environ.get(ENV_KB):
        return None
    try:
        magics.open_kb(os.environ[ENV_KB])
    except USER_ERRORS as exc:
        return str(exc)
    return None
