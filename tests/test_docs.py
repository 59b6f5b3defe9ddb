"""The documentation points at things that exist: every relative link resolves, every quoted command runs something
real (a module, a script, a make target), and nothing cites a document outside the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from helpers.configs import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Names of documents and folders outside the repository (spelled in pieces so that this file does not cite them).
OUTSIDE = ("FIND" + "INGS", "/" + "work" + "/", "../" + "shared")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+://|^mailto:|^#", t)]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"(?m)^#+ (.*)$", path.read_text()):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in _links(doc.read_text()):
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        missing_anchor = (
            bool(anchor) and path.suffix == ".md" and path.exists() and anchor not in _anchors(path)
        )
        if not path.exists() or missing_anchor:
            broken.append(target)
    assert broken == [], f"{doc.name}: links to nothing: {broken}"


def _shell_blocks(text: str) -> list[str]:
    """The contents of fenced blocks marked bash, sh, console or nothing; fences are paired line by line, so a
    block of another language (```python) never shifts the pairing."""
    blocks, current, language = [], [], None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and language is None:
            language, current = fence.group(1) or "plain", []
        elif fence:
            if language in ("bash", "sh", "console", "plain"):
                blocks.append("\n".join(current))
            language = None
        elif language is not None:
            current.append(line)
    return blocks


def _commands(text: str) -> list[str]:
    lines = []
    for block in _shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        lines += [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def _make_targets() -> set[str]:
    return set(re.findall(r"(?m)^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text()))


def test_every_command_in_the_readme_names_something_that_exists():
    targets = _make_targets()
    checked, missing = 0, []
    for line in _commands((ROOT / "README.md").read_text()):
        for module in re.findall(r"python3? -m ([\w.]+)", line):
            checked += 1
            ours = module.split(".")[0] in ("pipeline", "trainer", "scorers", "benchmarks")
            if ours and importlib.util.find_spec(module) is None:
                missing.append(f"module {module}")
        for script in re.findall(r"python3? ((?:pipeline|trainer|benchmarks)/[\w/]+\.py)", line):
            checked += 1
            if not (ROOT / script).is_file():
                missing.append(f"file {script}")
        for script in re.findall(r"(?:^|\s)((?:pipeline|trainer|benchmarks)/[\w/]+\.py)", line):
            if not (ROOT / script).is_file():
                missing.append(f"file {script}")
        for target in re.findall(r"(?:^|\s)make ([\w-]+)", line):
            checked += 1
            if target not in targets:
                missing.append(f"make target {target}")
        for config in re.findall(r"--config (\S+\.yaml)", line):
            if not (ROOT / config).is_file():
                missing.append(f"config {config}")
    assert checked >= 10, "the README's quickstart and stage commands were not found"
    assert missing == [], missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_nothing_outside_the_repository_is_cited(doc):
    text = doc.read_text()
    assert [name for name in OUTSIDE if name in text] == []
