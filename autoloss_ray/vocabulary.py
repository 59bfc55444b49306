"""The metric vocabulary (one definition for the whole project): the six metric names
(:data:`METRICS`), the boundary class sets (:data:`BOUNDARY_CLASSES`), metric specs such as
``"miou+biou"`` (:func:`parse_metric`) and the reward of a spec (:func:`reward`); the label
value that is ignored by default (:data:`IGNORE_INDEX`), the hold-out scoring protocols
(:data:`EVAL_PROTOCOLS`) and the loss defaults that the options share
(:data:`DEFAULT_BOUNDARY_TOLERANCE`, :data:`DEFAULT_PARAMETERIZATION`)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["METRICS", "BOUNDARY_CLASSES", "IGNORE_INDEX", "EVAL_PROTOCOLS",
           "DEFAULT_BOUNDARY_TOLERANCE", "DEFAULT_PARAMETERIZATION", "parse_metric", "reward"]

METRICS: tuple[str, ...] = ("miou", "fwiou", "biou", "bf1", "macc", "gacc")
BOUNDARY_CLASSES: tuple[str, ...] = ("all", "foreground")
# the label value the losses, metrics and datasets ignore by default (VOC's and Cityscapes')
IGNORE_INDEX = 255
# how a hold-out reward is scored: "native" keeps every label map at its own resolution (the
# model sees the image at the inference size; its logits are upsampled to the label), the
# field's protocol; "train_size" resizes image and label to the training size (labels by
# nearest neighbour, aspect squashed), cheaper, kept for the proxy reward
EVAL_PROTOCOLS: tuple[str, ...] = ("native", "train_size")
# the default width (pixels) of the boundary band of BIoU and BF1, in the losses, the metrics
# and the options
DEFAULT_BOUNDARY_TOLERANCE = 5
# the default curve parameterization of a searched loss (autoloss_ray.losses.parameterizations)
DEFAULT_PARAMETERIZATION = "bezier"


def parse_metric(spec: str) -> tuple[str, ...]:
    """"miou+biou" -> ("miou", "biou"). Terms must be in METRICS, each at most once."""
    if not isinstance(spec, str):
        raise TypeError(f"metric must be a string like 'miou' or 'miou+biou', got {spec!r}")
    terms = tuple(term.strip().lower() for term in spec.split("+"))
    for term in terms:
        if term not in METRICS:
            raise ValueError(
                f"unknown metric {term!r} in {spec!r}; allowed: {', '.join(METRICS)} "
                "(or a sum such as 'miou+biou')"
            )
    if len(set(terms)) != len(terms):
        raise ValueError(f"metric {spec!r} names a term twice")
    return terms


def reward(metrics: Mapping[str, float], spec: str) -> float:
    """Sum of the metric values named by ``spec`` (e.g. "miou+biou"); nan propagates."""
    terms = parse_metric(spec)
    missing = [t for t in terms if t not in metrics]
    if missing:
        raise KeyError(f"metrics {missing} needed by {spec!r} are missing from {sorted(metrics)}")
    return float(sum(float(metrics[t]) for t in terms))
