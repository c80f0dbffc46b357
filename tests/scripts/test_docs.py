"""The documentation's commands exist and its links lead somewhere.

Every ``mlops ...``, ``python -m pipeline ...`` and ``make ...`` command the README and the
pages under docs/ show (in a shell block or inline) is checked against the command line
itself: the subcommand exists and takes each ``--option`` the page writes. Every relative
link names a file of the repository, and an anchor a heading of that file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from pipeline.cli import app as pipeline_app
from scripts.cli import app as mlops_app

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO_ROOT / "README.md", REPO_ROOT / "bench" / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
)
README_MAX_LINES = 150

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# What starts a command we can check, after an optional prefix (a path, a namespace).
PREFIX = re.compile(
    r"^(?:ip netns exec \S+ |sudo )?(?:\.venv/bin/|\S*/)?"
    r"(?P<tool>mlops|make|python -m pipeline)(?=\s|$)"
)


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def _shell_lines(text: str) -> Iterator[str]:
    """Command lines of a page: each line of its shell blocks (continuations joined), and
    each inline code span."""
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            yield line.split(" #", 1)[0].strip()
    prose = FENCE.sub("", text)
    yield from (span.strip() for span in INLINE.findall(prose))


def _commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in PAGES:
        for line in _shell_lines(page.read_text()):
            for part in re.split(r"\s*(?:&&|;|\|\|)\s*", line):
                match = PREFIX.match(part)
                if match is None:
                    continue
                rest = part[match.end() :]
                if not rest.strip():
                    continue  # the tool's bare name, in prose
                try:
                    words = shlex.split(rest.replace("[", " ").replace("]", " ").replace("|", " "))
                except ValueError:
                    words = rest.split()
                found.append((_page_id(page), match["tool"], words))
    return found


COMMANDS = _commands()


def _resolve(group: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The subcommand the words name (as far as they name one), and the words' options."""
    command, path = group, []
    for word in words:
        if word.startswith("-"):
            break
        sub = None
        if hasattr(command, "list_commands"):  # a group (typer vendors its own click)
            sub = command.get_command(command.context_class(command), word)
        if sub is None:
            break
        command = sub
        path.append(word)
    options = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    return command, options


def _option_names(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _make_targets() -> set[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))


def test_the_pages_show_commands_of_every_tool() -> None:
    tools = {tool for _, tool, _ in COMMANDS}
    assert tools == {"mlops", "make", "python -m pipeline"}


@pytest.mark.parametrize(
    ("page", "tool", "words"),
    COMMANDS,
    ids=[f"{page}:{tool} {' '.join(words)}"[:90] for page, tool, words in COMMANDS],
)
def test_a_documented_command_exists_with_its_options(
    page: str, tool: str, words: list[str]
) -> None:
    if tool == "make":
        targets = [w for w in words if not w.startswith("-") and "=" not in w]
        assert set(targets) <= _make_targets(), f"{page}: no make target {targets}"
        return
    app = mlops_app if tool == "mlops" else pipeline_app
    root = typer.main.get_command(app)
    command, options = _resolve(root, words)
    if tool == "mlops":
        assert command is not root, f"{page}: `mlops {' '.join(words)}` names no subcommand"
    unknown = set(options) - _option_names(command) - {"--help"}
    assert not unknown, f"{page}: `{tool} {' '.join(words)}` uses options it lacks: {unknown}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text())
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", body, re.M)}


LINKS = [
    (page, target)
    for page in PAGES
    for target in LINK.findall(FENCE.sub("", page.read_text()))
    if not re.match(r"^[a-z]+:", target)
]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{_page_id(p)}->{t}" for p, t in LINKS])
def test_a_relative_link_leads_to_a_file_and_heading(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.exists(), f"{_page_id(page)} links to {target}: no such file"
    if anchor and destination.suffix == ".md":
        headings = _anchors(destination)
        assert anchor in headings, f"{_page_id(page)} links to {target}: no such heading"


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES


def test_a_misspelt_option_is_caught() -> None:
    root = typer.main.get_command(mlops_app)
    command, options = _resolve(root, ["twin", "up", "--hostz"])
    assert command.name == "up"
    assert set(options) - _option_names(command) == {"--hostz"}
