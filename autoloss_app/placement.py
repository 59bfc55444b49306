"""Refuse what Ray could never place, instead of waiting for it forever (issue 32).

A Ray Tune trial or a Ray Train worker group that asks for more CPUs or GPUs than the cluster
has waits without end: Ray logs "infeasible resource request" only to its own files. After
:func:`autoloss_app.ray_start.init_ray` the jobs call :func:`check_placeable` with what one
unit of work needs at once. On the embedded Ray (this machine only, nothing can be added)
that is a one-line :class:`OptionsError`; on a cluster joined with ``--address`` or from
``ray job submit`` an autoscaler may still add nodes, so it is a warning and the job goes on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from autoloss_ray.validation import OptionsError, missing_resources

__all__ = ["check_placeable", "joined_a_cluster"]


def joined_a_cluster(address: str | None) -> bool:
    """Whether the job runs on a cluster it joined (``--address``, or ``RAY_ADDRESS`` as in
    ``ray job submit``) rather than on the embedded single-machine Ray."""
    return bool(address) or bool(os.environ.get("RAY_ADDRESS"))


def check_placeable(need: Mapping[str, float], *, what: str, fix: str,
                    address: str | None) -> None:
    """``need`` (resource name -> amount placed at once) against ``ray.cluster_resources()``.

    ``what`` names the work ("retrain --workers 3"), ``fix`` says how to fix it. Raises
    :class:`OptionsError` on the embedded Ray; prints a warning on a joined cluster.
    """
    import ray

    short = missing_resources(dict(need), ray.cluster_resources())
    if not short:
        return
    detail = " and ".join(f"{n:g} {k} at once (this Ray has {h:g})"
                          for k, (n, h) in short.items())
    if joined_a_cluster(address):
        print(f"[autoloss] warning: {what} needs {detail}; it waits until the cluster's "
              f"autoscaler adds nodes (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return
    raise OptionsError(f"{what} needs {detail}, so it would wait forever on this machine's "
                       f"Ray; {fix}")
