"""The fenced code blocks of the project's Markdown (the README, the docs pages, ARCHITECTURE.md, ...),
found by a stable anchor, and a matcher for the output a page shows.

A block is found by its file (relative to the repository's root, e.g. ``"docs/cli.md"``), the heading it
sits under (the exact heading line, e.g. ``### CLI``), its fence's language and the start of its first
line; an edit that moves the block to another page, renames the heading, changes the fence or rewrites
that first line makes ``find_block`` fail, so a test never skips a block silently.
``tests/docs/test_doc_blocks.py`` holds every block to a test that runs it.

Console blocks (```` ```console ````) are read the usual way: a line starting with ``$ `` is a command, as
pasted into a shell; the lines below it, up to the next command, are what the page says it prints; a
line whose first non-blank character is ``#`` continues the comment of the command above (a shell
ignores it too).

What a page shows is matched by ``assert_shows``:

- ``...`` stands for anything: within a line, any text; as a line of its own, any number of lines.
- The example job ids (26 characters of Crockford base32, ``01M839Q1E8RQ5BSK24S5TS3GWE``)
  stand for any job id, the same one wherever the same example id appears in a command's output.
- With ``vary_numbers`` (output that depends on timing: percentages, counts, seconds), every number
  stands for any number and a progress bar of ``█``/``░`` for any bar of the same width.
- The shown lines must appear in the printed ones in that order; where the page shows no ``...`` line,
  the printed lines must be exactly the shown ones, no more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The Markdown at the root that is more than a pointer: the README and the pages the docs site includes.
ROOT_PAGES = ("README.md", "ARCHITECTURE.md", "SECURITY.md", "bench/README.md")

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_HEADING = re.compile(r"^#{1,6} ")
JOB_ID = re.compile(r"\b01[0-9A-HJKMNP-TV-Z]{24}\b")
_BAR = re.compile(r"[█░]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Block:
    """One fenced block: its file (relative to the root), the heading it sits under, the ``## `` heading
    above that, the fence's language, its text (unindented) and the line of its opening fence."""

    path: str
    heading: str
    section: str
    lang: str
    text: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.heading!r}, ```{self.lang})"


def documented_files() -> list[str]:
    """Every Markdown file whose blocks readers see: the root pages and every page under ``docs/``
    (relative to the root, sorted)."""
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return [*ROOT_PAGES, *pages]


def markdown_blocks(path: str = "README.md", text: str | None = None) -> list[Block]:
    """Every fenced block of the Markdown file ``path`` (relative to the root), in order; ``text``
    stands in for the file's content. ``section`` is the ``## `` heading above a block."""
    lines = ((ROOT / path).read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    heading = section = ""
    n = 0
    while n < len(lines):
        line = lines[n]
        fence = _FENCE.match(line)
        if fence is None:
            if _HEADING.match(line):
                heading = line.strip()
                if line.startswith("## "):
                    section = heading
            n += 1
            continue
        indent, start = fence["indent"], n
        body: list[str] = []
        n += 1
        while n < len(lines) and lines[n].strip() != "```":
            body.append(lines[n][len(indent) :] if lines[n].startswith(indent) else lines[n])
            n += 1
        if n == len(lines):
            raise AssertionError(f"{path}:{start + 1}: a ``` fence that never closes")
        found.append(Block(path, heading, section, fence["lang"], "\n".join(body) + "\n", start + 1))
        n += 1
    return found


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order."""
    return markdown_blocks("README.md", text)


def find_block(path: str, heading: str, lang: str, starts: str, text: str | None = None) -> Block:
    """The one block of ``path`` (relative to the root: ``"README.md"``, ``"docs/cli.md"``) under
    ``heading`` (the exact heading line) fenced as ``lang`` whose first line starts with ``starts``;
    fails, naming what it looked for, when there is none or more than one."""
    blocks = [b for b in markdown_blocks(path, text) if b.heading == heading and b.lang == lang]
    found = [b for b in blocks if b.text.startswith(starts)]
    assert len(found) == 1, (
        f"{path} should have exactly one ```{lang} block under {heading!r} starting with {starts!r}; "
        f"found {len(found)} (blocks there: {[b.text.splitlines()[0] for b in blocks if b.text.strip()]})"
    )
    return found[0]


@dataclass
class Command:
    """A ``$ `` line of a console block and the output lines the page shows under it."""

    line: str
    shown: list[str] = field(default_factory=list)


def console_commands(block: Block) -> list[Command]:
    """The commands of a console block, in order, each with the output the page shows for it."""
    commands: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:]))
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            assert commands, f"{block.where()}: output {line!r} before any $ command"
            commands[-1].shown.append(line)
    assert commands, f"{block.where()}: no $ command in a console block"
    return commands


def _pattern(shown: str, ids: dict[str, str], vary_numbers: bool) -> str:
    """The regular expression of one shown line (see the module's docstring); example ids already bound
    in ``ids`` become the actual id, the others a named group."""
    out: list[str] = []
    groups: set[str] = set()
    # Tokens: "...", an example job id, a bar, a number, or one other character.
    for token in re.finditer(rf"\.\.\.|{JOB_ID.pattern}|[█░]+|\d+(?:\.\d+)?|.", shown, flags=re.S):
        text = token.group()
        if text == "...":
            out.append(".*?")
        elif JOB_ID.fullmatch(text):
            name = f"id_{text}"
            if text in ids:
                out.append(re.escape(ids[text]))
            elif name in groups:
                out.append(f"(?P={name})")
            else:
                groups.add(name)
                out.append(f"(?P<{name}>{JOB_ID.pattern})")
        elif vary_numbers and _BAR.fullmatch(text):
            out.append(f"[█░]{{{len(text)}}}")
        elif vary_numbers and _NUMBER.fullmatch(text):
            out.append(r"\d+(?:\.\d+)?")
        else:
            out.append(re.escape(text))
    return "".join(out)


def _match(shown: str, printed: str, ids: dict[str, str], vary_numbers: bool) -> bool:
    found = re.fullmatch(_pattern(shown, ids, vary_numbers), printed)
    if found is None:
        return False
    for name, value in found.groupdict().items():
        ids[name.removeprefix("id_")] = value
    return True


def assert_shows(shown: list[str], printed: list[str], *, vary_numbers: bool = False) -> dict[str, str]:
    """Checks that ``printed`` (the lines a command printed) shows what the page ``shown`` for it;
    returns the actual job id each example id stood for."""
    ids: dict[str, str] = {}
    wanted = [s for s in shown if s.strip() != "..."]
    if len(wanted) == len(shown):
        assert len(printed) == len(shown), f"the page shows {shown!r}; printed {printed!r}"
        for s, p in zip(shown, printed, strict=True):
            assert _match(s, p, ids, vary_numbers), f"the page shows {s!r}; printed {p!r}"
        return ids
    at = 0
    for s in wanted:
        while at < len(printed) and not _match(s, printed[at], ids, vary_numbers):
            at += 1
        assert at < len(printed), (
            f"the page shows {s!r} (after the lines before it, in order); nothing printed matches: "
            f"{printed!r}"
        )
        at += 1
    return ids
