"""The option checks the commands share (no ray import): paths and URIs (:func:`is_uri`,
:func:`default_tune_dir`, output files and folders; the store's default path
:data:`DEFAULT_STORE`), finiteness, choices, seeds, concurrency, and the data options
(``--data-root``, ``--dataset folder``'s layout and ignore index).

``autoloss search`` (:class:`autoloss_app.options.SearchOptions`), ``search_loss``,
``retrain`` and ``evaluate`` check their options with these; each raises
:class:`~autoloss_ray.validation.OptionsError` with one sentence. A message names the option
as its user gave it: the command line's ``--flag-name`` or the Python API's
``keyword_name`` (:class:`Spelling`: :data:`FLAGS`, :data:`KEYWORDS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss_ray.validation import OptionsError
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["is_uri", "default_tune_dir", "check_finite", "check_output_file", "check_output_dir",
           "folder_num_classes", "check_data_root", "check_folder_options",
           "check_max_concurrent", "check_seed", "check_choice", "DEFAULT_STORE", "Spelling",
           "FLAGS", "KEYWORDS"]

# the Parquet store of a command that is given no --store (search, search_loss, export, report,
# retrain)
DEFAULT_STORE = "runs/store"


@dataclass(frozen=True)
class Spelling:
    """How a message names an option (a field name such as ``report_dir``): as a flag of the
    command line, ``--report-dir`` (``flags=True``, :data:`FLAGS`), or as a keyword argument
    of the Python API, ``report_dir`` (:data:`KEYWORDS`)."""

    flags: bool

    def __call__(self, name: str) -> str:
        return "--" + name.replace("_", "-") if self.flags else name


FLAGS = Spelling(flags=True)
KEYWORDS = Spelling(flags=False)


def default_tune_dir(store: str, tune_dir: str | None) -> str:
    """Where Ray Tune keeps a search's state: ``tune_dir`` made absolute when given (Ray Tune
    takes a local storage path only when absolute: a relative one fails after Ray has started,
    as "URI has empty scheme"); else ``tune`` beside a local store, or ``tune`` under a URI
    store (``s3://b/x`` -> ``s3://b/x/tune``, its query kept), so that a search on an object
    store needs no local folder and no extra option."""
    if tune_dir is not None:
        return tune_dir if is_uri(tune_dir) else os.path.abspath(tune_dir)
    if is_uri(store):
        head, sep, query = store.partition("?")
        return f"{head.rstrip('/')}/tune{sep}{query}"
    return str(Path(store).expanduser().resolve().parent / "tune")


def is_uri(path: str) -> bool:
    return "://" in str(path)


def check_finite(spelling: Spelling = FLAGS, /, **values: Any) -> None:
    """Raise :class:`OptionsError` naming (as ``spelling`` does) the first float option of
    ``values`` (name -> value) that is NaN or infinite (NaN passes every ``<``/``>`` range
    check, so ranges alone do not catch it)."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionsError(f"{spelling(name)} must be a finite number, got {value}")


def check_choice(value: Any, choices: Iterable[str], option: str, note: str = "") -> None:
    """``value`` is one of ``choices``; else "``option`` must be one of a, b``note``, got
    'x'" (``note``: why the choices are these, e.g. " (a playoff re-trains ...)")."""
    choices = tuple(choices)
    if value not in choices:
        raise OptionsError(f"{option} must be one of {', '.join(choices)}{note}, got {value!r}")


def check_output_file(path: str | None, option: str) -> None:
    """An output *file* option: refuse an existing directory or a parent that is a file."""
    if not path or is_uri(path):
        return
    if os.path.isdir(path):
        raise OptionsError(f"{option} {path!r} is an existing directory; give a file path")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise OptionsError(f"{option} {path!r} is below {parent!r}, which is a file")


def check_output_dir(path: str | None, option: str) -> None:
    """An output *directory* option: refuse an existing file (at it or at a parent)."""
    if not path or is_uri(path):
        return
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise OptionsError(f"{option} {path!r}: {probe!r} is an existing file; give a "
                           "directory path")


def folder_num_classes(data_root: str) -> int:
    """The class count of a folder dataset (its ``classes.txt``), as an OptionsError."""
    from autoloss_ray.data.folder import read_classes

    try:
        return len(read_classes(data_root))
    except (ValueError, FileNotFoundError) as exc:
        raise OptionsError(str(exc)) from None


def check_data_root(dataset: str, data_root: str | None) -> None:
    """``--data-root`` of a built-in dataset on files (not synthetic, not a user's
    MODULE:FUNCTION): given, existing, and a directory (each its own one-line error)."""
    if dataset == "synthetic" or ":" in dataset:
        return
    if not data_root:
        raise OptionsError(f"--dataset {dataset} needs --data-root pointing at its files")
    if is_uri(data_root):
        return
    if not os.path.exists(data_root):
        raise OptionsError(f"--data-root {data_root!r} does not exist")
    if not os.path.isdir(data_root):
        raise OptionsError(f"--data-root {data_root!r} is a file, not a directory; give the "
                           f"folder of the {dataset} dataset")


def check_folder_options(dataset: str, data_root: str | None, ignore_index: int | None,
                         num_classes: int | None = None) -> None:
    """``--ignore-index`` only with ``--dataset folder``; for a local folder its layout
    (:func:`autoloss_ray.data.folder.scan_folder`: classes.txt, pairing, split files; no
    pixel read), the ignore index against its classes and ``num_classes`` against
    ``classes.txt``. The masks' sizes and values are checked by ``check_data`` before Ray."""
    if dataset != "folder":
        if ignore_index is not None:
            raise OptionsError(f"--ignore-index is for --dataset folder; dataset {dataset!r} "
                               "has its own ignore index")
        return
    if not data_root or is_uri(data_root):
        return
    from autoloss_ray.data.folder import check_ignore, scan_folder

    try:
        layout = scan_folder(data_root)
        check_ignore(IGNORE_INDEX if ignore_index is None else ignore_index, layout.num_classes)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise OptionsError(str(exc)) from None
    if num_classes is not None and num_classes != layout.num_classes:
        raise OptionsError(f"num_classes {num_classes} does not match "
                           f"{layout.root / 'classes.txt'}, which names {layout.num_classes}")


def check_max_concurrent(value: int | None, option: str = "--max-concurrent") -> None:
    """The trials running at once: None (as many as the cluster fits) or an int >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{option} must be an int >= 1, got {value!r}")
    if value < 1:
        raise OptionsError(f"{option} must be >= 1 (or left out), got {value}")


def check_seed(value: int, flag: str = "--seed") -> None:
    """A seed is an integer >= 0 (numpy's generators take no negative seed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionsError(f"{flag} must be an integer >= 0, got {value!r}")
