"""The documentation: README.md (the front page) and the Sphinx site under docs/.

- every fenced code block of README.md and docs/getting-started.md runs here, or is marked
  ``<!-- not-run: REASON -->`` on the line before it; the ``autoloss`` commands of the blocks
  that do not run still have to parse with the real parser;
- README's test command is .ci/run's, letter for letter;
- the store page lists exactly the store's columns and types, the paper page exactly the
  package's presets; no page cites a design document that is not in the repository;
- ``autoloss --version``, LICENSE and CITATION.cff;
- the site builds with warnings as errors (slow: it imports the packages and renders them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import REPO

DOCS = REPO / "docs"
RUN_BLOCKS_OF = ("README.md", "docs/getting-started.md")  # every block of these runs
_FENCE = re.compile(r"^```(\S*)(?:\s.*)?$")
_MARK = re.compile(r"^<!--\s*(run|not-run)\s*(?::\s*(.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts (1-based line of the fence), its language (the
    fence's info string, "" when none), its text, and the marker comment right before it
    (``("not-run", reason)``, ``("run", "")`` or ``None``)."""

    path: str
    line: int
    lang: str
    code: str
    mark: tuple[str, str] | None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def fenced_blocks(rel: str) -> list[Block]:
    """The fenced blocks of a Markdown file, in order (fences of 3 backticks, not nested)."""
    lines = (REPO / rel).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{i + 1}: a code fence that is never closed")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = _MARK.match(lines[k]) if k >= 0 else None
        blocks.append(Block(rel, i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n",
                            (mark.group(1), mark.group(2) or "") if mark else None))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for rel in RUN_BLOCKS_OF for b in fenced_blocks(rel)]


def _runs(block: Block) -> bool:
    return block.mark is None or block.mark[0] == "run"


def command_lines(code: str) -> list[str]:
    """Shell lines with continuations joined and comments dropped, split at ``&&``."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split("&&")]
    return out


def test_the_block_parser_reads_markers_languages_and_lines(tmp_path: Path, monkeypatch) -> None:
    text = ("# t\n\n<!-- not-run: needs a GPU cluster -->\n```bash\nautoloss search\n```\n\n"
            "```python\nx = 1\n```\n<!-- run -->\n\n```bash\necho hi\n```\n")
    (tmp_path / "page.md").write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    got = fenced_blocks("page.md")
    assert [(b.line, b.lang, b.mark) for b in got] == [
        (4, "bash", ("not-run", "needs a GPU cluster")), (8, "python", None), (13, "bash", ("run", ""))]
    assert got[0].code == "autoloss search\n"
    (tmp_path / "open.md").write_text("```python\nx = 1\n")
    with pytest.raises(ValueError, match="never closed"):
        fenced_blocks("open.md")
    assert command_lines("a --x \\\n    --y && b # note\n# only a comment\n") == ["a --x --y", "b"]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.id)
def test_every_block_runs_or_says_why_not(block: Block) -> None:
    assert block.lang in {"bash", "python"}, (
        f"{block.id}: a block of README or getting started is bash or python (got {block.lang!r})")
    if block.mark and block.mark[0] == "not-run":
        assert len(block.mark[1]) >= 10, f"{block.id}: a not-run block says why in a sentence"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    """A fresh working folder holding what the main job leaves there: a loss file at
    runs/demo-loss.json (here the paper's mIoU preset, standing in for the searched one)."""
    from autoloss_ray import SurrogateLoss

    (tmp_path / "runs").mkdir()
    SurrogateLoss.from_preset("miou", num_classes=6).to_file(tmp_path / "runs" / "demo-loss.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _starts_ray(block: Block) -> bool:
    return "search_loss(" in block.code or "tune.Tuner(" in block.code


PY_BLOCKS = [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if _starts_ray(b) else [])
             for b in ALL_BLOCKS if b.lang == "python" and _runs(b)]
SH_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "bash" and _runs(b)]


@pytest.mark.parametrize("block", PY_BLOCKS)
def test_python_blocks_run_as_printed(block: Block, in_tmp: Path, capsys) -> None:
    scope = {"__name__": "doc_block"}
    try:
        exec(compile(block.code, block.id, "exec"), scope)
    finally:
        if _starts_ray(block):
            import ray

            ray.shutdown()
    out = capsys.readouterr().out
    if "evaluate(" in block.code and "print(" in block.code and not _starts_ray(block):
        assert "'miou'" in out and "'gacc'" in out  # the six metrics were printed
    if "search_loss(" in block.code:  # the search ran to its end and exported its loss
        from autoloss_ray import SurrogateLoss

        result = scope["result"]
        assert set(result.trials["status"]) == {"ok"} and len(result.trials) >= 2
        classes = json.loads(result.trials["config_json"].iloc[0])["num_classes"]
        assert SurrogateLoss.from_file(result.export).num_classes == classes


@pytest.mark.parametrize("block", SH_BLOCKS, ids=lambda b: b.id)
def test_shell_blocks_run_as_printed(block: Block, in_tmp: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=in_tmp, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{block.id} printed nothing"

PAGES = ["README.md", "cluster/README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))]
EVERY_BLOCK = [b for rel in PAGES for b in fenced_blocks(rel)]
_PYTHONS = ("python", "python3", ".venv/bin/python", "ray")


@pytest.mark.parametrize("block", EVERY_BLOCK, ids=lambda b: b.id)
def test_every_block_of_the_docs_is_valid_code_with_real_options(block: Block) -> None:
    """A block that runs nowhere still compiles (python) and names real commands and options:
    every ``autoloss ...``, ``python search.py ...`` and ``ray submit ... search.py -- ...``
    line parses with the real parser (``...`` stands for the user's other options)."""
    import argparse

    from autoloss_app.cli import add_search_arguments, build_parser

    if block.lang == "python":
        compile(block.code, block.id, "exec")
        return
    search_py = argparse.ArgumentParser(prog="search.py")
    add_search_arguments(search_py)
    for line in command_lines(block.code):
        head = line.split()[:1]
        if not head or not (head[0].endswith("autoloss") or head[0] in _PYTHONS):
            continue  # printed output (a bench's lines may hold an apostrophe), not a command
        words = [w for w in shlex.split(line) if w != "..."]
        if words and words[0].endswith("autoloss"):
            parser, args = build_parser(), words[1:]
        elif words and words[0] in _PYTHONS and "search.py" in words:
            args = words[words.index("search.py") + 1:]
            parser, args = search_py, args[1:] if args[:1] == ["--"] else args
        else:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(args)
        except SystemExit as exc:  # --help and --version exit 0
            assert exc.code == 0, f"{block.id}: `{line}` does not parse (exit {exc.code})"


def _one_line(command: str) -> str:
    return " ".join(re.sub(r"\\\n", " ", command).split())


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    ci_command = _one_line(ci[ci.index("python3.11 -m venv"):])
    readme = [line for b in fenced_blocks("README.md") for line in command_lines(b.code)]
    joined = [_one_line(b.code) for b in fenced_blocks("README.md")]
    assert any(ci_command in block for block in joined), ci_command
    assert ".venv/bin/autoloss search --experiment demo --store runs/store --export " \
        "runs/demo-loss.json --report-dir runs/report" in readme


def test_readme_is_a_front_page_linking_into_the_docs() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    links = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert links, "README links into docs/"
    for link in links:
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"


def test_no_page_cites_a_design_document_outside_the_repository() -> None:
    for page in [*DOCS.glob("*.md"), REPO / "README.md"]:
        text = page.read_text()
        assert not re.search(r"DESIGN(\.md|\s+section)", text), f"{page.name} cites DESIGN"


def _md_table(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in row.strip().strip("|").split("|")] for row in lines[start + 2:end]]


def test_the_store_page_lists_exactly_the_store_columns() -> None:
    from autoloss_ray.store.schema import POLICY_SCHEMA, TRIAL_SCHEMA

    text = (DOCS / "store.md").read_text()
    for heading, schema in (("## Trials table", TRIAL_SCHEMA), ("## Policy table", POLICY_SCHEMA)):
        documented = [(row[0].strip("`"), row[1]) for row in _md_table(text, heading)]
        actual = [(f.name, str(f.type).replace("item: ", "")) for f in schema]
        assert documented == actual


def test_the_paper_page_lists_exactly_the_shipped_presets() -> None:
    from autoloss_ray.losses.presets import PRESETS

    rows = _md_table((DOCS / "paper.md").read_text(), "## The paper's released curves")
    documented = {(r[0], r[1]): tuple(float(x) for x in r[2].split(",")) for r in rows}
    shipped = {(name, curve): tuple(v) for name, curves in PRESETS.items()
               for curve, v in curves.items()}
    assert documented == shipped  # bit for bit: float() of the printed digits


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_autoloss_version_prints_the_package_version(capsys) -> None:
    from importlib.metadata import version

    from autoloss_app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"autoloss {version('autoloss-ray')}"
    assert version("autoloss-ray") == _pyproject()["project"]["version"]


def test_license_and_citation() -> None:
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
    assert _pyproject()["project"]["license"] == {"text": "Apache-2.0"}
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    assert cff["version"] == _pyproject()["project"]["version"]
    assert {"message", "title", "authors"} <= set(cff)
    (paper,) = cff["references"]
    assert paper["title"] == ("Auto Seg-Loss: Searching Metric Surrogates for Semantic "
                              "Segmentation")
    assert [a["family-names"] for a in paper["authors"]] == [
        "Li", "Tao", "Zhu", "Wang", "Huang", "Dai"]
    assert paper["year"] == 2021 and "ICLR" in paper["conference"]["name"]


def test_the_docs_extra_is_part_of_the_test_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(extras["docs"]) <= set(extras["test"])


_DOC_PACKAGES = ("sphinx", "furo", "myst_parser", "sphinxarg")


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in _DOC_PACKAGES),
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    out = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages <= {p.stem for p in out.glob("*.html")}
    cli = (out / "cli.html").read_text()
    for option in ("--version", "--answer", "--loss-sync", "--checkpoint"):
        assert option in cli, f"the CLI reference lacks {option}"
    api = (out / "api.html").read_text()
    for name in ("SurrogateLoss", "PPO2Searcher", "StoreCallback", "ExperimentStore",
                 "search_loss"):
        assert name in api, f"the API page lacks {name}"
