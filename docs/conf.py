"""Sphinx configuration of the autoloss-ray documentation site.

Build (warnings are errors, as CI's tests/app/test_docs.py runs it):
    python -m sphinx -W --keep-going -b html docs docs/_build/html
Packages: pip install -e '.[docs]' (sphinx, furo, myst-parser, sphinx-argparse).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's packages, installed or not

project = "autoloss-ray"
author = "the autoloss-ray developers"
copyright = "the autoloss-ray developers, Apache-2.0"
try:
    release = metadata.version("autoloss-ray")
except metadata.PackageNotFoundError:  # a checkout that was never pip-installed
    release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"autoloss-ray {release}"

# the API pages document what the docstrings say; the signatures carry the types
autodoc_default_options = {"members": False, "undoc-members": False}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "separated"
# the unit tests import no ray: the API pages must not need a GPU or a running cluster either
nitpicky = False


def _keyword_only_args(app, what, name, obj, options, lines) -> None:
    """Napoleon knows ``Args:`` and ``Keyword Args:``; the code writes ``Args (keyword-only):``
    for a keyword-only signature. Read it as ``Keyword Args:`` (before napoleon runs)."""
    for i, line in enumerate(lines):
        if line.strip() in ("Args (keyword-only):", "Args (keyword only):"):
            lines[i] = line.replace(line.strip(), "Keyword Args:")


def setup(app) -> dict:
    app.connect("autodoc-process-docstring", _keyword_only_args, priority=400)
    return {"parallel_read_safe": True}
