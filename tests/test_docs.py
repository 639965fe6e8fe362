"""The documentation's examples run: every ```python block of README.md and docs/*.md, each in a fresh interpreter.

One case per block, named file:line (the line of its opening fence). Shell commands and output belong in ```bash or
```text blocks, which are not run. A block runs in an empty folder with its own $ADNTN_HOME (signing keys,
torch.compile cache) and $ADNTN_TUNING (tuning records), so it neither reads nor changes the user's.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPEN = re.compile(r"^```\s*([\w+-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line of the opening fence, language, code) of each fenced block; an unclosed fence is an error."""
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if lang is None:
            m = OPEN.match(line)
            if m:
                lang, start, body = m.group(1), i, []
        elif line.strip() == "```":
            blocks.append((start, lang, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        raise AssertionError(f"{path.relative_to(ROOT)}:{start}: the ```{lang} block is never closed")
    return blocks


# A block that builds with TVM (importing it alone takes ~6 s here) takes 8-20 s: `make test-fast` skips those.
BUILDS = re.compile(r"adntn\.(compile|tune)\(|\.build\(|backend=\"adntn\"")


def python_blocks() -> list:
    return [pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}",
                         marks=[pytest.mark.slow] if BUILDS.search(code) else [])
            for path in DOCS for line, lang, code in code_blocks(path) if lang == "python"]


@pytest.mark.parametrize("code", python_blocks())
def test_python_block(code: str, tmp_path: Path) -> None:
    env = dict(os.environ, TVM_NUM_THREADS="1", OMP_NUM_THREADS="1", ADNTN_HOME=str(tmp_path / "home"),
               ADNTN_TUNING=str(tmp_path / "tuning"), MPLBACKEND="Agg")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit status {r.returncode}\n--- stderr ---\n{r.stderr[-6000:]}"


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    missing = [p for p in pages if f"]({p})" not in readme]
    assert not missing, f"README.md does not link {missing}"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    in_code = {i for start, _, code in code_blocks(path) for i in range(start, start + code.count("\n") + 2)}
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("#") and i not in in_code}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_fences(path: Path) -> None:
    """Relative links point at files (and headings) that exist (web links are not checked); every fence closes;
    each docs page opens with a paragraph under its title."""
    blocks = code_blocks(path)  # raises on an unclosed fence
    in_code = {i for start, _, code in blocks for i in range(start, start + code.count("\n") + 2)}
    text = path.read_text().splitlines()
    broken = []
    for i, line in enumerate(text, 1):
        if i in in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = path.parent / file if file else path
            if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
                broken.append(f"{path.relative_to(ROOT)}:{i}: {target}")
    assert not broken, "links to missing files or headings:\n" + "\n".join(broken)
    if path.parent.name == "docs" and path.name != "architecture.md":  # architecture.md has its own author
        assert text[0].startswith("# "), f"{path.name}: the first line is not a title"
        first = next(line for line in text[1:] if line.strip())
        assert not first.startswith(("#", "```", "|", "-")), f"{path.name}: no opening paragraph under the title"
