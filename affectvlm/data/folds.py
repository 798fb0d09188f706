"""Subject-independent k-fold splits with a validation split carved from each fold's training subjects.

No subject is ever on two sides of a fold, and model selection (the validation subjects) never looks at the
test fold. Splits are seeded and repeatable; a new ``repeat`` gives a new random partition for the
"repeated 10-fold" protocol. Fold lists export to JSON so that they can be published beside results.

    folds = subject_folds(samples, k=10, seed=0)
    save_folds("folds.json", folds)
    train, val, test = split_samples(samples, folds[0])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FOLDS_FORMAT", "Fold", "labelled_persons", "load_folds", "save_folds", "split_samples", "subject_folds",
]  # fmt: skip

FOLDS_FORMAT = "affectvlm-folds/1"


@dataclass(frozen=True)
class Fold:
    """One fold: disjoint sorted subject lists."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        sides = {"train": set(self.train), "val": set(self.val), "test": set(self.test)}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if both := sides[a] & sides[b]:
                raise ValueError(f"fold {self.index}: subjects {sorted(both)[:10]} are in both {a} and {b}")

    def side(self, subject: str) -> str | None:
        """``train``, ``val``, ``test`` or None for a subject of none of them."""
        for name in ("train", "val", "test"):
            if subject in getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }


def _subjects_of(items) -> list[str]:
    # accepts subject ids or samples (anything with a .subject)
    return sorted({getattr(x, "subject", x) for x in items})


def subject_folds(
    subjects,
    k: int = 10,
    seed: int = 0,
    repeat: int = 0,
    val_fraction: float = 0.1,
    val_subjects: int | None = None,
    person=None,
) -> list[Fold]:
    """Split subjects into `k` folds; every subject is in exactly one test fold.

    Args:
        subjects: subject ids, or samples with a ``.subject`` (duplicates are merged).
        k: number of folds (default 10: 54 train / 6 test subjects on BU-3DFE Subset I).
        seed, repeat: the partition is a function of both; a new `repeat` gives a new partition.
        val_fraction: fraction of each fold's training subjects held out for validation (at least one
            subject when > 0).
        val_subjects: an exact number of validation subjects instead.
        person: a function from a subject id to the person it is, when one person has several ids (SynthFER-3D
            names a person F0001 in its 3D scans and F001 in its 4D sequences: `affectvlm.data.synth.person_of`);
            the split is then made over persons and a person's ids always share a side. None: one id, one
            person (the split is then exactly the per-id split of earlier versions).

    Returns:
        `k` :class:`Fold` objects with sorted subject tuples.
    """
    groups: dict[str, list[str]] = {}
    for subject in _subjects_of(subjects):
        groups.setdefault(subject if person is None else person(subject), []).append(subject)
    people = sorted(groups)
    if not 2 <= k <= len(people):
        raise ValueError(f"k must be in [2, {len(people)}] for {len(people)} subjects, got {k}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, repeat]).permutation(len(people))
    chunks = np.array_split(order, k)

    def ids(chosen) -> tuple[str, ...]:
        return tuple(sorted(s for p in chosen for s in groups[p]))

    folds = []
    for i, chunk in enumerate(chunks):
        test = {people[j] for j in chunk}
        rest = [p for p in people if p not in test]
        n_val = (
            val_subjects
            if val_subjects is not None
            else (max(1, round(val_fraction * len(rest))) if val_fraction > 0 else 0)
        )
        if not 0 <= n_val < len(rest):
            raise ValueError(
                f"fold {i}: cannot hold out {n_val} validation subjects from {len(rest)} training subjects"
            )
        pick = np.random.default_rng([seed, repeat, 1 + i]).permutation(len(rest))[:n_val]
        val = {rest[j] for j in pick}
        folds.append(Fold(i, ids(set(rest) - val), ids(val), ids(test)))
    return folds


def labelled_persons(entries, labels, datasets=None) -> dict[str, str]:
    """Subject -> person over the `entries` (render-cache entries, or samples' ``to_dict()``) labelled with
    one of `labels` and, given `datasets`, of one of those datasets: the subjects a run on those labels trains
    and tests on. A subject with none (a Bosphorus subject with action-unit scans only) would sit in a fold
    with nothing to train or test, so folds over a cache or a dataset are made over these: ``folds`` and
    train/cross_validate.py alike. The person is :func:`affectvlm.data.synth.entry_person`'s."""
    from .synth import entry_person

    labels, datasets = set(labels), None if datasets is None else set(datasets)
    return {
        e["subject"]: entry_person(e)
        for e in entries
        if e["label"] in labels and (datasets is None or e.get("dataset") in datasets)
    }


def split_samples(samples, fold: Fold) -> tuple[list, list, list]:
    """(train, val, test) samples of a fold; samples of subjects in none of its lists are left out."""
    out: dict[str | None, list] = {"train": [], "val": [], "test": [], None: []}
    for s in samples:
        out[fold.side(s.subject)].append(s)
    return out["train"], out["val"], out["test"]


def save_folds(path: str | os.PathLike, folds: list[Fold], **info) -> None:
    """Write folds as JSON (``{"format", "info", "folds": [{index, train, val, test}]}``); `info` is any
    JSON-able provenance (dataset, protocol, seed, k) to publish with them."""
    doc = {"format": FOLDS_FORMAT, "info": info, "folds": [f.to_dict() for f in folds]}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def load_folds(path: str | os.PathLike) -> list[Fold]:
    """Read folds written by :func:`save_folds`; checks the format and that every fold is disjoint."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read folds from {path}: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FOLDS_FORMAT:
        raise ValueError(f"{path} is not a folds file (format {FOLDS_FORMAT!r})")
    try:
        return [
            Fold(int(f["index"]), tuple(f["train"]), tuple(f["val"]), tuple(f["test"])) for f in doc["folds"]
        ]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed fold entry ({err})") from err
