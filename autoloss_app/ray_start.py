"""Ray for the application's jobs: :func:`init_ray` joins the cluster of ``--address`` (or
the one a ``ray job submit`` runs in) or starts an embedded single-machine Ray, whose every
listening socket :func:`start_loopback_ray` puts on 127.0.0.1 (docs/reliability.md). ``autoloss
search`` (:mod:`autoloss_app.search_job`), ``search_loss``, the playoff, ``autoloss retrain``
and ``autoloss evaluate --workers`` start Ray through it.
"""

from __future__ import annotations

import os
from typing import Any

import ray

__all__ = ["init_ray", "start_loopback_ray"]


def init_ray(address: str | None, *, verbose: int = 1,
             runtime_env: dict[str, Any] | None = None) -> str | None:
    """Connect to ``address`` (or the cluster this process was submitted to) or start Ray.

    ``runtime_env`` (a user's ``--model``/``--dataset`` plugin:
    :func:`autoloss_app.plugins.plugin_runtime_env`) ships the working folder to every
    worker; inside a job submitted with its own ``working_dir`` it is left to the job.
    Returns the dashboard URL when one is up.
    """
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": verbose > 1}
        if runtime_env:
            from autoloss_app.plugins import job_has_working_dir

            if not job_has_working_dir():
                kwargs["runtime_env"] = runtime_env
        if address:
            ctx = ray.init(address=address, **kwargs)
        elif os.environ.get("RAY_ADDRESS"):
            # inside `ray job submit`: join that cluster with its own settings
            ctx = ray.init(**kwargs)
        else:
            ctx = start_loopback_ray(**kwargs)
    else:
        ctx = None
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    return f"http://{url}" if url and not str(url).startswith("http") else url


# Ray 2.60 binds the GCS, the raylet, the workers' gRPC servers and the dashboard agent's
# gRPC/HTTP/metrics ports to the node's IP; the node IP of a fresh local instance is the
# host's outbound address, except when ENABLE_RAY_CLUSTER is off (Ray's macOS/Windows
# default), where it is 127.0.0.1 and every one of those servers listens on loopback only.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_loopback_ray(**kwargs: Any):
    """``ray.init`` of an embedded single-machine Ray whose every listening socket is on
    127.0.0.1 (tests/app/test_reliability.py reads them from /proc). Ray's processes start with
    the switch in their environment; the driver's own copy is restored afterwards so that a
    later ``ray.init(address=...)`` in this process behaves as usual."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # address="local": always a new instance. Without an address ray.init joins the last
        # cluster `ray start` left on this machine (its ray_current_cluster file) instead.
        return ray.init(address="local", _node_ip_address="127.0.0.1",
                        dashboard_host="127.0.0.1", **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = saved_env
