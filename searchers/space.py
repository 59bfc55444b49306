"""Box-shaped search spaces for the searchers: a flat vector <-> a Ray Tune config.

Two kinds of space are accepted:

* a ``SearchSpace``-like object (anything with ``low``, ``high``, ``init`` and ``dim``, e.g.
  ``autoloss_ray.search_space("miou")``): the whole vector goes to one config key, ``"theta"``
  by default, as a list of floats;
* a dict (nested dicts allowed) whose leaves are :class:`Box` ranges, ``tune.uniform`` or
  ``tune.loguniform`` domains (each leaf its own config key; loguniform dimensions are searched
  in log space) or constants (passed through unchanged, as Ray passes them: a tuple or list is
  a constant, never a range). Any other Tune domain (choice, randint, quantized, randn, ...)
  is not box-shaped and raises ``ValueError``; so does a domain nested inside a list or tuple
  (these searchers search dict leaves only).

Migration: earlier versions took a bare ``(low, high)`` tuple in the searcher's own ``space``
dict as a range. Write ``Box(low, high)`` (or ``tune.uniform(low, high)``) instead; a bare
2-tuple of numbers there raises ``TypeError`` saying so. In Tune's ``param_space`` a tuple is
always a constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Box", "BoxSpace"]

THETA_KEY = "theta"


class Box:
    """An explicit search range ``[low, high]`` for a dict space entry (uniform in the box).

    ``Box(0.0, 1.0)`` is what a bare ``(0.0, 1.0)`` tuple used to mean; infinite bounds are
    allowed (PPO2 then uses a half or plain normal).
    """

    __slots__ = ("low", "high")

    def __init__(self, low: float, high: float) -> None:
        try:
            lo, hi = float(low), float(high)
        except (TypeError, ValueError):
            raise TypeError(f"Box(low, high) takes two numbers; got ({low!r}, {high!r})") from None
        self.low, self.high = lo, hi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and (self.low, self.high) == (other.low, other.high)

    def __hash__(self) -> int:
        return hash((Box, self.low, self.high))

    def __getstate__(self) -> tuple[float, float]:
        return (self.low, self.high)

    def __setstate__(self, state: tuple[float, float]) -> None:
        self.low, self.high = state

    def __repr__(self) -> str:
        return f"Box({self.low!r}, {self.high!r})"


def _is_domain(value: Any) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _leaf_to_dim(
    path: tuple[str, ...], value: Any, *, param_space: bool
) -> tuple[float, float, bool] | None:
    """(low, high, log) for a box leaf, None for a constant; ValueError for other domains."""
    from ray.tune.search import sample

    name = "/".join(path)
    if isinstance(value, Box):
        return value.low, value.high, False
    if isinstance(value, (list, tuple)):
        if _nested_domain(value):
            raise ValueError(
                f"search space entry {name!r} has a Tune domain inside a "
                f"{type(value).__name__}: these searchers search dict leaves only; use a dict "
                "(e.g. {'0': tune.uniform(...), ...}) or a constant"
            )
        if not param_space and isinstance(value, tuple) and len(value) == 2 and all(
            _is_number(v) for v in value
        ):
            raise TypeError(
                f"search space entry {name!r} is a bare tuple {value!r}: a tuple is a constant "
                f"(as in Ray), not a range any more; write Box({value[0]!r}, {value[1]!r}) or "
                f"tune.uniform({value[0]!r}, {value[1]!r}) to search it, or put the constant "
                "in Tune's param_space"
            )
        return None
    if _is_domain(value):
        sampler = getattr(value, "sampler", None)
        if isinstance(value, sample.Float) and isinstance(sampler, sample.Float._Uniform):
            return float(value.lower), float(value.upper), False
        if isinstance(value, sample.Float) and isinstance(sampler, sample.Float._LogUniform):
            lo, hi = float(value.lower), float(value.upper)
            if not (lo > 0 and hi > lo):
                raise ValueError(
                    f"search space entry {name!r}: loguniform needs 0 < lower < upper, got "
                    f"({lo}, {hi})"
                )
            return math.log(lo), math.log(hi), True
        raise ValueError(
            f"search space entry {name!r} is {type(value).__name__} with sampler "
            f"{type(sampler).__name__}: these searchers need a box-shaped space "
            "(tune.uniform, tune.loguniform or Box(low, high)); put other parameters in "
            "param_space as constants or use another searcher"
        )
    return None


class BoxSpace:
    """A box in search coordinates plus the mapping to and from Tune configs.

    Attributes: ``low``, ``high``, ``init`` (float64 [D]), ``dim``, ``names`` (one per
    dimension), ``is_vector`` (True when the vector goes to one key).
    """

    def __init__(self, space: Any, *, key: str = THETA_KEY, param_space: bool = False) -> None:
        """``param_space=True``: the dict is Tune's param_space (tuples are constants without
        a word); otherwise it is the searcher's own space (a bare numeric 2-tuple is refused
        with a pointer to :class:`Box`, the old meaning)."""
        self.key = key
        self._param_space = bool(param_space)
        self.constants: dict[tuple[str, ...], Any] = {}
        self._paths: list[tuple[str, ...]] = []
        self._log: list[bool] = []
        if isinstance(space, Mapping):
            self.is_vector = False
            lows, highs = [], []
            self._walk(space, (), lows, highs)
            if not self._paths:
                raise ValueError(
                    "the search space dict has no box-shaped entries (Box(low, high), "
                    "tune.uniform or tune.loguniform); nothing to search"
                )
            self.low = np.asarray(lows, dtype=np.float64)
            self.high = np.asarray(highs, dtype=np.float64)
            self.names = tuple("/".join(p) for p in self._paths)
            both = np.isfinite(self.low) & np.isfinite(self.high)
            mid = 0.5 * (np.where(both, self.low, 0.0) + np.where(both, self.high, 0.0))
            init = np.where(both, mid, 0.0)
            self.init = np.clip(init, self.low, self.high)
        elif all(hasattr(space, a) for a in ("low", "high", "init", "dim")):
            self.is_vector = True
            self.low = np.atleast_1d(np.asarray(space.low, dtype=np.float64)).copy()
            self.high = np.atleast_1d(np.asarray(space.high, dtype=np.float64)).copy()
            self.init = np.atleast_1d(np.asarray(space.init, dtype=np.float64)).copy()
            if not (self.low.shape == self.high.shape == self.init.shape == (int(space.dim),)):
                raise ValueError(
                    f"space.low, .high, .init must all have shape (dim,) = ({space.dim},); got "
                    f"{self.low.shape}, {self.high.shape}, {self.init.shape}"
                )
            names = getattr(space, "names", None)
            self.names = (
                tuple(names)
                if names is not None and len(names) == self.low.size
                else tuple(f"{key}[{i}]" for i in range(self.low.size))
            )
        else:
            raise TypeError(
                "space must be a SearchSpace-like object (with .low, .high, .init, .dim) or a "
                f"dict of name -> Box(low, high) / tune.uniform / tune.loguniform; got "
                f"{type(space).__name__}"
            )
        if self.low.size == 0:
            raise ValueError("the search space has dimension 0; nothing to search")
        bad = np.flatnonzero(~(self.high > self.low))
        if bad.size:
            d = int(bad[0])
            raise ValueError(
                f"search space dimension {self.names[d]!r} is empty or inverted: expected "
                f"low < high, got ({self.low[d]}, {self.high[d]})"
            )

    def _walk(self, node: Mapping, prefix: tuple[str, ...], lows: list, highs: list) -> None:
        for k, v in node.items():
            path = prefix + (str(k),)
            if isinstance(v, Mapping):
                self._walk(v, path, lows, highs)
                continue
            dim = _leaf_to_dim(path, v, param_space=self._param_space)
            if dim is None:
                self.constants[path] = v
            else:
                self._paths.append(path)
                lows.append(dim[0])
                highs.append(dim[1])
                self._log.append(dim[2])

    @property
    def dim(self) -> int:
        return int(self.low.size)

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys this space writes (top level)."""
        if self.is_vector:
            return (self.key,)
        return tuple(dict.fromkeys(p[0] for p in self._paths + list(self.constants)))

    def to_config(self, vec: np.ndarray) -> dict[str, Any]:
        """Vector [D] in search coordinates -> Tune config (plain Python floats)."""
        vec = np.asarray(vec, dtype=np.float64)
        if self.is_vector:
            return {self.key: [float(v) for v in vec]}
        out: dict[str, Any] = {}
        for path, value in self.constants.items():
            _set_path(out, path, value)
        for path, log, v in zip(self._paths, self._log, vec):
            _set_path(out, path, float(math.exp(v)) if log else float(v))
        return out

    def from_config(self, config: Any) -> np.ndarray:
        """Tune config (or a plain sequence of D numbers) -> vector [D]; ValueError if invalid."""
        if isinstance(config, Mapping):
            if self.is_vector:
                if self.key not in config:
                    raise ValueError(f"point {config!r} has no {self.key!r} key")
                vec = np.asarray(config[self.key], dtype=np.float64)
            else:
                vals = []
                for path, log in zip(self._paths, self._log):
                    node: Any = config
                    for p in path:
                        if not isinstance(node, Mapping) or p not in node:
                            raise ValueError(
                                f"point {config!r} lacks the parameter {'/'.join(path)!r}"
                            )
                        node = node[p]
                    v = float(node)
                    if log:
                        if v <= 0:
                            raise ValueError(
                                f"point value {v} for log-scale {'/'.join(path)!r} must be > 0"
                            )
                        v = math.log(v)
                    vals.append(v)
                vec = np.asarray(vals, dtype=np.float64)
        elif isinstance(config, (Sequence, np.ndarray)) and not isinstance(config, str):
            vec = np.asarray(config, dtype=np.float64)
        else:
            raise TypeError(f"a point must be a config dict or a sequence; got {config!r}")
        if vec.shape != (self.dim,):
            raise ValueError(f"point must have {self.dim} values; got shape {vec.shape}")
        # tolerate round-off from exp/log at the bounds
        tol = 1e-9 * np.maximum(1.0, np.abs(np.where(np.isfinite(self.low), self.low, 0)))
        if not np.all(np.isfinite(vec)) or np.any(vec < self.low - tol) or np.any(
            vec > self.high + tol
        ):
            raise ValueError(
                f"point {vec.tolist()} lies outside the search box "
                f"[{self.low.tolist()}, {self.high.tolist()}]"
            )
        return np.clip(vec, self.low, self.high)


def _set_path(out: dict, path: tuple[str, ...], value: Any) -> None:
    node = out
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


def has_domains(config: Any) -> bool:
    """True if a (nested) config holds any Tune search domain or :class:`Box` (also inside
    lists and tuples, which the searchers then refuse with a clear error)."""
    if isinstance(config, Mapping):
        return any(has_domains(v) for v in config.values())
    if isinstance(config, (list, tuple)):
        return any(has_domains(v) for v in config)
    return _is_domain(config) or isinstance(config, Box)


def _nested_domain(value: Any) -> bool:
    return any(has_domains(v) for v in value)
