"""The test suite, one folder per package of the repository (see docs/development.md).

The suite is a package (``tests``, with one subpackage per folder) so that test modules of the
same name in two folders cannot clash and the shared helpers import as ``tests.<name>``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
FIXTURES = REPO / "tests" / "fixtures"  # files written by earlier code, compared against
