#!/usr/bin/env python
"""Entry point for `ray submit cluster/gpu.yaml search.py -- --metric miou ...`.

Takes the same options as `autoloss search`. It joins the running cluster when there is one
(the head it was submitted to, `ray job submit`, or `--address`), and otherwise starts an
embedded local Ray, so `python search.py --help` and a local run work too.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from autoloss_app.cli import search_script_main

    return search_script_main(argv)


if __name__ == "__main__":
    sys.exit(main())
