#!/usr/bin/env python
"""Entry point for `ray submit cluster/gpu.yaml search.py -- --metric miou ...`.

Takes the same options as `autoloss search`. It joins the running cluster when there is one
(the head it was submitted to, `ray job submit`, or `--address`), and otherwise starts an
embedded local Ray, so `python search.py --help` and a local run work too.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from autoloss_app.cli import (
        add_search_arguments,
        explicit_search_options,
        search_options_from_args,
    )
    from autoloss_app.options import OptionsError

    parser = argparse.ArgumentParser(
        prog="search.py",
        description="Search a metric surrogate loss with PPO2 on a Ray cluster "
        "(same options as `autoloss search`).",
    )
    add_search_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        opts = search_options_from_args(args, explicit=explicit_search_options(argv))
        if opts.address is None:
            opts = _with_running_cluster(opts)
        opts = opts.resolved()
        from autoloss_app.search_job import run_search

        outcome = run_search(opts)
    except (OptionsError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"search.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search.py: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    from autoloss_app.cli import _finish_search

    return _finish_search(outcome, "search.py")


def _with_running_cluster(opts):
    """Use address='auto' when a Ray cluster runs on this machine (e.g. a `ray up` head)."""
    import dataclasses
    import os

    if os.environ.get("RAY_ADDRESS"):
        return opts
    try:
        from ray._private.services import find_gcs_addresses

        if find_gcs_addresses():
            return dataclasses.replace(opts, address="auto")
    except Exception:  # older/newer Ray: fall back to an embedded cluster
        pass
    return opts


if __name__ == "__main__":
    sys.exit(main())
