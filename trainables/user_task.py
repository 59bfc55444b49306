"""A Ray Tune function trainable around the user's own training function.

``user_trainable(train_fn)`` returns the trainable ``user_task(config)`` that
:func:`autoloss_app.search_loss` hands to Tune. Each trial (on a Ray worker):

1. seeds ``random``, numpy and torch with the trial's ``seed``;
2. builds the sampled loss, ``SurrogateLoss(metric, num_classes=C, parameterization=...,
   theta=<the searcher's theta>, ignore_index=..., boundary_tolerance=...)``, on the device
   Ray assigned to the trial (``"cuda"`` with a GPU, else ``"cpu"``);
3. calls ``train_fn(loss, context)``, where ``context`` is a read-only :class:`TrialContext`
   (``seed``, ``trial_id``, ``step``, ``sample``, ``num_classes``, ``ignore_index``,
   ``theta``, ``metric``, ``parameterization``, ``device`` and the user's constants);
4. turns what it returns into the trial's result (:func:`user_result`): a dict with every
   metric the search's metric spec names (``{"miou": 0.61, ...}``, fractions in [0, 1]);
   ``reward`` is their sum (:func:`autoloss_ray.vocabulary.reward`).

A ``train_fn`` that raises, or returns something that is not such a dict, gives a failed
trial (``status="failed"``, the error text in ``error``), exactly like a failed proxy trial:
the search goes on. A non-finite metric gives ``status="nan"`` (a diverged trial).
:func:`report` sends intermediate values (optional; Tune shows them, the store keeps only
the final result).
"""

from __future__ import annotations

import json
import math
import random
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from autoloss_ray.vocabulary import DEFAULT_PARAMETERIZATION, METRICS, parse_metric

__all__ = ["user_trainable", "user_result", "report", "TrialContext", "RESERVED_RESULT_KEYS",
           "CONTEXT_KEYS"]

# keys of the final result the trainable sets itself; a train_fn returning one of them would
# be ambiguous (which value is the trial's?), so it is refused with a clear message
RESERVED_RESULT_KEYS = frozenset({
    "reward", "status", "error", "kind", "device", "node", "node_id", "node_ip", "gpu_ids",
    "metric", "seed", "num_classes", "done",
})
# the keys of every TrialContext (the user's constants may not take these names)
CONTEXT_KEYS = ("seed", "trial_id", "step", "sample", "num_classes", "ignore_index", "theta",
                "metric", "parameterization", "device")
_MAX_ERROR_CHARS = 2000


class TrialContext(Mapping):
    """The read-only config a ``train_fn`` gets: ``context["seed"]``, ``context["device"]``...

    Keys: ``seed`` (int; torch, numpy and ``random`` are already seeded with it), ``trial_id``
    (Tune's), ``step`` and ``sample`` (which sample of which search step), ``num_classes``,
    ``ignore_index``, ``theta`` (tuple of floats), ``metric``, ``parameterization``,
    ``device`` (``"cuda"`` or ``"cpu"``, where the loss already is), then the constants given
    as ``search_loss(config=...)``. Assigning a key raises ``TypeError``.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("the trial context is read-only")

    def __repr__(self) -> str:
        return f"TrialContext({self._values!r})"


def _metric_value(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"train_fn returned {key}={value!r}; a metric must be a number")
    try:
        number = float(value)  # floats, ints, numpy and 0-d torch scalars
    except (TypeError, ValueError):
        raise ValueError(f"train_fn returned {key}={value!r} ({type(value).__name__}); a "
                         "metric must be a number") from None
    if math.isfinite(number) and not 0.0 <= number <= 1.0:
        raise ValueError(f"train_fn returned {key}={number}; metrics are fractions in [0, 1] "
                         f"(0.61 for an mIoU of 61 %)")
    return number


def _plain(key: str, value: Any) -> Any:
    """A JSON value for an extra result key (scalars of numpy/torch become Python numbers)."""
    if callable(getattr(value, "item", None)) and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy scalar or a 0-d tensor
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        raise ValueError(f"train_fn returned {key}={value!r} ({type(value).__name__}); extra "
                         "values must be numbers, strings or JSON lists/dicts of them") from None
    return value


def user_result(returned: Any, metric: str) -> dict[str, Any]:
    """The result of a trial from what its ``train_fn`` returned (pure; no Ray).

    ``returned`` must be a mapping with a number in [0, 1] for every term of ``metric``
    (e.g. ``"miou+biou"`` needs ``miou`` and ``biou``); other keys are kept (numbers,
    strings, JSON values) except :data:`RESERVED_RESULT_KEYS`. Returns the six metrics
    (NaN where not given), ``reward`` (the sum of the spec's terms), ``status`` (``"ok"``;
    ``"nan"`` when the reward is not finite) and the extra keys. Raises ``ValueError`` /
    ``TypeError`` with one sentence on anything else.
    """
    terms = parse_metric(metric)
    if not isinstance(returned, Mapping):
        raise TypeError(
            f"train_fn must return a dict of metrics such as {{{terms[0]!r}: 0.61}}, got "
            f"{type(returned).__name__}: {str(returned)[:100]}")
    bad_keys = [k for k in returned if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"train_fn's result keys must be strings, got {bad_keys[:3]!r}")
    reserved = sorted(RESERVED_RESULT_KEYS & set(returned))
    if reserved:
        raise ValueError(
            f"train_fn returned the key(s) {reserved}, which the search sets itself (the "
            f"reward is the sum of the metric spec {metric!r}); rename them")
    missing = [t for t in terms if t not in returned]
    if missing:
        raise ValueError(
            f"train_fn's result has no {', '.join(map(repr, missing))} (the search's metric "
            f"{metric!r} needs it); it returned the keys {sorted(returned)}")
    result: dict[str, Any] = {k: _plain(k, v) for k, v in returned.items() if k not in METRICS}
    for k in METRICS:
        result[k] = _metric_value(k, returned[k]) if k in returned else float("nan")
    reward = float(sum(result[t] for t in terms))
    result["reward"] = reward if math.isfinite(reward) else float("nan")
    result["status"] = "ok" if math.isfinite(reward) else "nan"
    result["error"] = None
    return result


def report(metrics: Mapping[str, Any] | None = None, **values: Any) -> None:
    """Send intermediate values of a running trial to Ray Tune (optional), e.g.
    ``report(epoch=3, miou=0.42)``: Tune's progress and loggers show them; the store keeps
    only the final result that ``train_fn`` returns. Outside a Tune trial (``train_fn``
    called directly, to debug it) it does nothing. Reserved keys raise ``ValueError``."""
    from ray import tune

    row = {**dict(metrics or {}), **values}
    reserved = sorted(RESERVED_RESULT_KEYS & set(row))
    if reserved:
        raise ValueError(f"report() got the reserved key(s) {reserved}; rename them")
    import warnings

    try:
        with warnings.catch_warnings():  # Ray warns (and returns None) outside a trial
            warnings.simplefilter("ignore")
            inside = tune.get_context().get_trial_id() is not None
    except Exception:  # noqa: BLE001 - outside a Tune session
        inside = False
    if not inside:
        return
    tune.report({"reward": float("nan"), **{k: float("nan") for k in METRICS},
                 **{k: _plain(k, v) for k, v in row.items()}, "status": "running"})


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text[:_MAX_ERROR_CHARS]


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_user_trial(train_fn: Callable[..., Any], config: Mapping[str, Any], *,
                   device: str = "cpu", trial_id: str | None = None) -> dict[str, Any]:
    """One trial of a user task without Ray: the loss from ``config``, ``train_fn(loss,
    context)``, its result (:func:`user_result`) or a failed result. Never raises for an
    error of ``train_fn`` (``KeyboardInterrupt`` and ``SystemExit`` pass through)."""
    from autoloss_ray.losses.surrogate import SurrogateLoss

    metric = str(config["metric"])
    seed = int(config.get("seed", 0))
    theta = config.get("theta")
    context = {
        "seed": seed, "trial_id": trial_id,
        "step": config.get("search_step"), "sample": config.get("search_sample"),
        "num_classes": int(config["num_classes"]), "ignore_index": config.get("ignore_index"),
        "theta": None if theta is None else tuple(float(v) for v in theta),
        "metric": metric, "parameterization": config.get("parameterization", DEFAULT_PARAMETERIZATION),
        "device": device,
        **dict(config.get("user_config") or {}),
    }
    start = time.monotonic()
    try:
        _seed_everything(seed)
        loss = SurrogateLoss(
            metric, num_classes=context["num_classes"],
            parameterization=context["parameterization"],
            theta=None if theta is None else list(context["theta"]),
            ignore_index=context["ignore_index"],
            boundary_tolerance=int(config.get("boundary_tolerance", 5)),
        ).to(device)
        returned = train_fn(loss, TrialContext(context))
        result = user_result(returned, metric)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, never fatal
        result = {"reward": float("nan"), **{k: float("nan") for k in METRICS},
                  "status": "failed", "error": _error_text(exc)}
    result.setdefault("train_seconds", time.monotonic() - start)
    result.setdefault("eval_seconds", 0.0)
    result.update(device=device, node=socket.gethostname(), metric=metric, seed=seed,
                  num_classes=context["num_classes"])
    return result


def user_trainable(train_fn: Callable[..., Any]) -> Callable[[dict[str, Any]], None]:
    """The Ray Tune function trainable that runs ``train_fn`` as each trial (see the module
    docstring); wrap it with :func:`trainables.with_gpu_resources` for its resources."""
    if not callable(train_fn):
        raise TypeError(f"train_fn must be a callable train_fn(loss, config), got "
                        f"{type(train_fn).__name__}")

    def user_task(config: dict[str, Any]) -> None:
        import ray
        from ray import tune

        from trainables.proxy import trial_device

        device, gpu_ids = trial_device("auto")
        try:
            trial_id = tune.get_context().get_trial_id()
        except Exception:  # noqa: BLE001
            trial_id = None
        result = run_user_trial(train_fn, config, device=device, trial_id=trial_id)
        result.update(kind="search", gpu_ids=",".join(str(g) for g in gpu_ids))
        try:
            result["node_id"] = ray.get_runtime_context().get_node_id()
            result["node_ip"] = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001
            pass
        tune.report(result)

    return user_task
