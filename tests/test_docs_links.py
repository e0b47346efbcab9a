"""The documentation stays inside the repository: every relative link in every Markdown file resolves (the file,
and the heading when the link names one), nothing points at the notes outside the repository that users do not
have, and the README stays a front page."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12 * 1024
# Notes that live beside the repository, not in it; spelled in pieces so this file does not match itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared", "METHOD" + ".md", "OFFLINE" + ".md")
# Folders that commands generate (git-ignored); used only where git cannot list the files.
GENERATED = {".venv", ".git", ".dvc", ".pytest_cache", "data", "cache", "runs", "results", "weights", "build"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def repo_files() -> list[Path]:
    """Tracked files and new ones git does not ignore; without git, every file outside generated folders."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not GENERATED & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file())


def markdown_files() -> list[Path]:
    return [p for p in repo_files() if p.suffix == ".md"]


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in LINK.findall(without_code(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{where} points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def test_slug_follows_github():
    assert slug("Scaling out: torchrun") == "scaling-out-torchrun"
    assert slug("`dvc plots show`, offline") == "dvc-plots-show-offline"
    assert slug("metrics.json") == "metricsjson"
    assert slug("The paper's experiments, one command each") == "the-papers-experiments-one-command-each"


def test_link_check_catches_a_broken_link(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top\n[ok](#top) [gone](b.md) [out](../x.md) [bad](#nowhere)\n"
                                   "```\n[in code](c.md)\n```\n", encoding="utf-8")
    (tmp_path / "x.md").write_text("", encoding="utf-8")
    problems = broken_links(tmp_path / "a.md")
    assert len(problems) == 3, problems
    assert any("b.md" in p for p in problems) and any("outside" in p for p in problems)
    assert any("nowhere" in p for p in problems)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert not broken_links(path)


def test_nothing_refers_to_notes_outside_the_repository():
    hits = []
    for path in repo_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        hits += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                 if any(s in line for s in OUTSIDE)]
    assert not hits, "\n".join(hits)


def test_readme_is_a_front_page():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= README_MAX_BYTES
    # CI runs the README's test command: the two must not drift apart.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in readme.read_text(encoding="utf-8")
