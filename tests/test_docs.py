"""The README is a front door that stays honest: its links resolve, its first commands run, it stays short."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
# [text](target) outside code spans; images too.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`[^`]*`")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def relative_links(path: Path) -> list[str]:
    links, in_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            links += _LINK.findall(_CODE_SPAN.sub("", line))
    return [link for link in links if not re.match(r"^[a-z]+:", link)]


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    broken = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading with that anchor in {file.name}")
    assert broken == []


def test_the_link_checker_sees_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n## Some `code` here\n[ok](#some-code-here) [bad](b.md#x) [no](c.md)\n")
    (tmp_path / "b.md").write_text("# Other\n")
    links = relative_links(tmp_path / "a.md")
    assert links == ["#some-code-here", "b.md#x", "c.md"]
    assert "some-code-here" in anchors(tmp_path / "a.md") and "x" not in anchors(tmp_path / "b.md")


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES
    first_screen = "\n".join(lines[:40])
    # What it is, how to try it, how to use it with one's own Label Studio.
    for must in ("make demo", "make test", "Label Studio", "EmerDiff", "## Use it with your Label Studio"):
        assert must in README.read_text(encoding="utf-8") and (must.startswith("##") or must in first_screen)


def first_code_block_commands() -> list[list[str]]:
    """The commands of the README's code blocks up to 'A label config': each turned into a `--help` call.

    A command that starts servers or builds images is checked for what it names: its program and its
    options exist (``--help`` of the Python module / make target dry run), not run for real.
    """
    text = README.read_text(encoding="utf-8").split("## A label config")[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def test_the_first_commands_of_the_readme_exist() -> None:
    commands = first_code_block_commands()
    assert commands, "the README lost its first code blocks"
    checked = 0
    for words in commands:
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
            words = words[1:]
        program = words[0]
        if program == "make":
            done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0, (words, done.stderr)
        elif program.endswith("gunicorn"):
            config, app = words[words.index("-c") + 1], words[-1]
            assert (ROOT / config).exists()
            module = app.split(":")[0]
            assert (ROOT / (module.replace(".", "/") + ".py")).exists()
        elif program in ("cp", "mkdir"):
            assert all((ROOT / word).exists() for word in words[1:] if "/" in word and not word.startswith("-")
                       and word != "label-studio-files" and word != ".env")
        elif program == "docker":
            assert (ROOT / "docker-compose.yml").exists()
        else:
            raise AssertionError(f"the README's first blocks name a command this test does not know: {words}")
        checked += 1
    assert checked == len(commands)


@pytest.mark.parametrize("module", ["segmentor", "converters", "ml_backend", "segmentor.toy"])
def test_the_documented_entry_points_answer_help(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
