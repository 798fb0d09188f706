"""Data plumbing for training: datasets of uint8 views, subject-independent splits, the epoch batch sampler.

A dataset here is a `torch.utils.data.Dataset` with batched reads: `ds.__getitems__(indices)` returns

    {"views": (b, V, H, W, 3) uint8, "view_mask": (b, V) bool, "labels": (b,) int64, "index": (b,) int64,
     "metadata": list of b dicts (gender, age_group, ethnicity, intensity, ... when known)}

and it knows each item's subject (`subjects`), its `label_names` and `view_names`. Two sources:
`CacheViews` over a render cache (`python -m affectvlm.data prepare ...`, e.g. SynthFER-3D) and `ToyViews`,
small in-memory synthetic views for tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES
from affectvlm.data.cache import recorded_settings
from affectvlm.data.synth import entry_person

# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------


class DataError(ValueError):
    """The run's data or folds cannot make the run (train/train.py says it in one line, no traceback)."""


class ViewsDataset(Dataset):
    """Base: subclasses set `label_names`, `view_names`, `subjects` (per item) and implement `_read`."""

    label_names: list[str]
    view_names: list[str]
    subjects: list[str]

    def __len__(self) -> int:
        return len(self.subjects)

    def _read(self, idx: np.ndarray) -> dict:
        raise NotImplementedError

    def __getitems__(self, indices) -> dict:
        return self._read(np.asarray(indices, dtype=np.int64))

    def __getitem__(self, i: int) -> dict:
        batch = self._read(np.asarray([i], dtype=np.int64))
        return {k: v[0] for k, v in batch.items()}

    @property
    def persons(self) -> list[str]:
        """Per item, the person it shows: its subject, unless one person has several subject ids."""
        return self.subjects

    def subset(self, keep: Sequence[int]) -> ViewsDataset:
        return SubsetViews(self, keep)

    def labels_array(self) -> np.ndarray:
        raise NotImplementedError

    def datasets_array(self) -> np.ndarray:
        """Per sample, an id of its dataset (3D scans, 4D sequences): class balancing works within each."""
        return np.zeros(len(self.labels_array()), dtype=np.int64)


class SubsetViews(ViewsDataset):
    def __init__(self, base: ViewsDataset, keep: Sequence[int]):
        self.base = base
        self.keep = np.asarray(keep, dtype=np.int64)
        self.label_names, self.view_names = base.label_names, base.view_names
        self.subjects = [base.subjects[i] for i in self.keep]

    def _read(self, idx: np.ndarray) -> dict:
        batch = self.base._read(self.keep[idx])
        batch["index"] = torch.from_numpy(idx.copy())
        return batch

    def labels_array(self) -> np.ndarray:
        return self.base.labels_array()[self.keep]

    def datasets_array(self) -> np.ndarray:
        return self.base.datasets_array()[self.keep]


def collate_batched(batch):
    """`collate_fn` for loaders over these datasets: `__getitems__` already returns the batched dict."""
    if isinstance(batch, dict):
        return batch
    keys = batch[0].keys()
    return {k: [b[k] for b in batch] if k == "metadata" else torch.stack([b[k] for b in batch]) for k in keys}


class ToyViews(ViewsDataset):
    """Small synthetic multiview data, deterministic from `seed`, for tests and smoke runs.

    Each class has a random smooth pattern, each subject its own pattern (identity), and the expression
    strength grows with an intensity 1..`intensities`. The left view is the frontal one shifted sideways and
    the right view is the mirror image of the left, so a flip that swaps left and right stays consistent.
    """

    def __init__(
        self,
        label_names: Sequence[str],
        view_names: Sequence[str] = tuple(DEFAULT_VIEW_NAMES),
        num_subjects: int = 10,
        image_size: int = 32,
        noise: float = 0.25,
        intensities: int = 2,
        seed: int = 0,
    ):
        self.label_names, self.view_names = list(label_names), list(view_names)
        rng = np.random.default_rng(seed)
        size, num_classes = image_size, len(self.label_names)

        def smooth(n: int) -> np.ndarray:  # (n, size, size, 3) in [0, 1]: low-frequency random images
            coarse = rng.random((n, 3, 4, 4)).astype(np.float32)
            up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic")
            return up.clamp(0, 1).permute(0, 2, 3, 1).numpy()

        class_pattern, subject_pattern = smooth(num_classes), smooth(num_subjects)
        views, labels, subjects, metadata = [], [], [], []
        ethnicities, genders = ("WH", "AE", "BL", "LA"), ("female", "male")
        for s in range(num_subjects):
            meta = {"gender": genders[s % 2], "ethnicity": ethnicities[s % 4], "age_group": "30-39"}
            for c in range(num_classes):
                for level in range(1, intensities + 1):
                    strength = 0.4 + 0.6 * level / intensities
                    front = 0.45 * subject_pattern[s] + 0.55 * strength * class_pattern[c]
                    front = front + noise * rng.standard_normal(front.shape).astype(np.float32)
                    left = np.roll(front, size // 8, axis=1)
                    sample = {"frontal": front, "left": left, "right": left[:, ::-1]}
                    views.append(np.stack([sample.get(v, front) for v in self.view_names]))
                    labels.append(c)
                    subjects.append(f"S{s:03d}")
                    metadata.append({**meta, "intensity": level})
        self._views = (np.clip(np.stack(views), 0, 1) * 255).round().astype(np.uint8)  # (N, V, H, W, 3)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.subjects, self._metadata = subjects, metadata

    def _read(self, idx: np.ndarray) -> dict:
        return {
            "views": torch.from_numpy(self._views[idx]),
            "view_mask": torch.ones(len(idx), len(self.view_names), dtype=torch.bool),
            "labels": torch.from_numpy(self._labels[idx]),
            "index": torch.from_numpy(idx.copy()),
            "metadata": [dict(self._metadata[i]) for i in idx],
        }

    def labels_array(self) -> np.ndarray:
        return self._labels


class CacheViews(ViewsDataset):
    """A render cache (`affectvlm.data.RenderCacheDataset`) seen through the run's labels and views.

    label_names: the classes of the model, in logit order; cache entries with other labels are left out
        (e.g. "neutral" for the six-emotion task) and the cache's label ids are mapped to these.
    view_names: which of the cache's views to use (e.g. ["frontal"] for the single-view runs); the cache's
        views are named by `cache_view_names` (default frontal, left, right, the renderer's default order).
    datasets: keep entries whose `dataset` is one of these (a "both" SynthFER-3D cache holds "synth3d" and
        "synth4d").
    face_models: keep entries whose metadata's `face_model` is one of these (SynthFER-3D: "sfm", "ict").
    """

    def __init__(
        self,
        cache_dir,
        label_names: Sequence[str],
        view_names: Sequence[str] = tuple(DEFAULT_VIEW_NAMES),
        datasets: Sequence[str] | None = None,
        cache_view_names: Sequence[str] = tuple(DEFAULT_VIEW_NAMES),
        face_models: Sequence[str] | None = None,
    ):
        from affectvlm.data.cache import RenderCacheDataset

        self.label_names, self.view_names = list(label_names), list(view_names)
        self.cache = RenderCacheDataset(cache_dir, labels=self.label_names)
        keep = [
            i
            for i, e in enumerate(self.cache.entries)
            if (datasets is None or e.get("dataset") in set(datasets))
            and (face_models is None or (e.get("metadata") or {}).get("face_model") in set(face_models))
        ]
        if not keep:
            why = _no_entries(cache_dir, self.cache.entries, self.label_names, datasets, face_models)
            raise DataError(why)
        self._keep = np.asarray(keep, dtype=np.int64)
        entries = [self.cache.entries[i] for i in keep]
        label_index = {name: i for i, name in enumerate(self.label_names)}
        self._labels = np.asarray([label_index[e["label"]] for e in entries], dtype=np.int64)
        self.dataset_names = sorted({str(e.get("dataset")) for e in entries})
        self._datasets = np.asarray([self.dataset_names.index(str(e.get("dataset"))) for e in entries])
        self.subjects = [e["subject"] for e in entries]
        # SynthFER-3D names a person F0001 in its 3D scans and F001 in its 4D sequences: one person
        self._persons = [entry_person(e) for e in entries]
        self._metadata = [{**e.get("metadata", {}), "intensity": e.get("intensity")} for e in entries]
        missing = [v for v in self.view_names if v not in cache_view_names]
        if missing:
            raise ValueError(f"views {missing} are not in the cache's views {list(cache_view_names)}")
        self._view_index = [list(cache_view_names).index(v) for v in self.view_names]

    @property
    def persons(self) -> list[str]:
        return self._persons

    def _read(self, idx: np.ndarray) -> dict:
        views = self.cache.read(self._keep[idx])[:, self._view_index]  # (b, V, H, W, 3) uint8
        return {
            "views": torch.from_numpy(np.ascontiguousarray(views)),
            "view_mask": torch.ones(len(idx), len(self.view_names), dtype=torch.bool),
            "labels": torch.from_numpy(self._labels[idx]),
            "index": torch.from_numpy(idx.copy()),
            "metadata": [dict(self._metadata[i]) for i in idx],
        }

    def labels_array(self) -> np.ndarray:
        return self._labels

    def datasets_array(self) -> np.ndarray:
        return self._datasets


def _no_entries(cache_dir, entries: list[dict], labels, datasets, face_models) -> str:
    """Why a cache gave a run no entries: a dataset filter that names none of the cache's datasets (the
    shipped configs keep SynthFER-3D's synth3d/synth4d entries; a real dataset's cache holds its own) says
    what to set."""
    held = sorted({str(e.get("dataset")) for e in entries})
    if entries and datasets is not None and not set(held) & set(datasets):
        return (
            f"no cache entries in {cache_dir} of data.datasets={list(datasets)}: it holds datasets {held}; "
            f"to train on all of it add --set data.datasets=null (or --set data.datasets=[{','.join(held)}])"
        )
    return (
        f"no cache entries in {cache_dir} with labels {list(labels)}, datasets {datasets} and face models "
        f"{face_models}"
    )


class ConcatViews(ViewsDataset):
    """Several render caches as one dataset (`data.cache_dir` given as a list), e.g. BU-3DFE and Bosphorus, or
    two SynthFER-3D caches of different seeds. Their views and render settings must match (the model is
    trained on one way of rendering). Subjects are named `<cache name>/<subject>` (`cache_names`: the folder's
    name), so two caches' "F0001" stay two people in the folds and the validation split."""

    def __init__(self, parts: Sequence[CacheViews], names: Sequence[str]):
        if len(set(names)) != len(names):
            raise ValueError(f"the caches' folder names must differ: {list(names)}")
        self.parts = list(parts)
        self.label_names, self.view_names = parts[0].label_names, parts[0].view_names
        self.subjects = [f"{name}/{s}" for name, part in zip(names, parts) for s in part.subjects]
        self._persons = [f"{name}/{s}" for name, part in zip(names, parts) for s in part.persons]
        self._part = np.concatenate([np.full(len(part), i) for i, part in enumerate(parts)])
        self._local = np.concatenate([np.arange(len(part)) for part in parts])
        self.dataset_names = sorted({name for part in parts for name in part.dataset_names})
        self._datasets = np.concatenate(
            [np.asarray([self.dataset_names.index(part.dataset_names[d]) for d in part.datasets_array()], dtype=np.int64)
             for part in parts]
        )  # fmt: skip

    @property
    def persons(self) -> list[str]:
        return self._persons

    def _read(self, idx: np.ndarray) -> dict:
        reads = {}
        for i in np.unique(self._part[idx]):
            pos = np.flatnonzero(self._part[idx] == i)
            reads[int(i)] = (pos, self.parts[int(i)]._read(self._local[idx[pos]]))
        order = np.concatenate([pos for pos, _ in reads.values()])
        back = np.argsort(order)  # rows back into the order asked for
        metadata = [m for _, batch in reads.values() for m in batch["metadata"]]
        out = {
            k: torch.cat([batch[k] for _, batch in reads.values()])[back]
            for k in ("views", "view_mask", "labels")
        }
        return {**out, "index": torch.from_numpy(idx.copy()), "metadata": [metadata[j] for j in back]}

    def labels_array(self) -> np.ndarray:
        return np.concatenate([part.labels_array() for part in self.parts])

    def datasets_array(self) -> np.ndarray:
        return self._datasets


def cache_folders(cache_dir) -> list[str]:
    """`data.cache_dir` as a list of folders (one folder, or several to train on together)."""
    return [str(c) for c in cache_dir] if isinstance(cache_dir, list | tuple) else [str(cache_dir)]


def build_dataset(config: dict) -> ViewsDataset:
    d = config["data"]
    if d["source"] == "toy":
        toy = d["toy"]
        return ToyViews(
            d["labels"],
            d["views"],
            num_subjects=toy["num_subjects"],
            image_size=toy["image_size"],
            noise=toy["noise"],
            intensities=toy["intensities"],
            seed=config["seed"],
        )
    if not d["cache_dir"]:
        raise ValueError(
            "data.source=cache needs --set data.cache_dir=<folder> (python -m affectvlm.data prepare ...)"
        )
    folders = cache_folders(d["cache_dir"])
    parts = [
        CacheViews(c, d["labels"], d["views"], datasets=d["datasets"], face_models=d.get("face_models"))
        for c in folders
    ]
    if len(parts) == 1:
        return parts[0]
    check_settings_agree(folders, [any(e.get("sequence") for e in part.cache.entries) for part in parts])
    return ConcatViews(parts, cache_names(folders))


def cache_names(folders: Sequence) -> list[str]:
    """Each cache's name in its subjects' names: its folder's name, or where two caches share one (the same
    dataset rendered with the same settings from two roots: `a/bu4dfe-<key>`, `b/bu4dfe-<key>`) the shortest
    tail of its path that tells them apart, so that their subjects stay different people."""
    paths = [Path(os.path.abspath(f)).parts for f in folders]
    names = []
    for path in paths:
        for k in range(1, len(path) + 1):
            tail = path[-k:]
            if sum(p[-k:] == tail for p in paths) == 1 or k == len(path):
                names.append("/".join(tail).lstrip("/"))
                break
    return names


def check_settings_agree(folders: Sequence, sequences: Sequence[bool]) -> None:
    """Caches train together only when drawn alike: every render setting but `frames` agrees, and `frames`
    agrees among the caches that hold sequences (`sequences`, one flag a folder: a cache of 3D scans records the
    frame count it was prepared with, but never pooled frames)."""
    settings = [cache_settings(c) for c in folders]
    drawn = [{k: v for k, v in s.items() if k != "frames"} for s in settings]
    pooled = {s.get("frames") for s, held in zip(settings, sequences) if held}
    if any(s != drawn[0] for s in drawn[1:]) or len(pooled) > 1:
        raise ValueError(f"caches rendered differently cannot train together: {settings}")


def cache_settings(folder) -> dict:
    """A cache's render settings (size, mode, views, ...) from its cache.json, {} when it has none, as caches
    compare them (`recorded_settings`: a cache written before `orient` was a setting was drawn with "auto")."""
    info = Path(folder) / "cache.json"
    settings = json.loads(info.read_text()).get("settings") if info.is_file() else None
    return {k: v for k, v in recorded_settings(settings or {}).items() if v is not None}


def holds_sequences(folder) -> bool:
    """Whether a cache holds 4D samples (dynamic images), from its index."""
    index = Path(folder) / "index.json"
    return index.is_file() and any(e.get("sequence") for e in json.loads(index.read_text())["entries"])


def run_settings(folders: Sequence) -> dict:
    """The render settings a run's model serves with (saved with its processor): the first cache's, with
    `frames` taken from the first cache that holds sequences, since only such a cache's frames were used."""
    settings = cache_settings(folders[0])
    pooled = next((cache_settings(f) for f in folders if holds_sequences(f)), {})
    if "frames" in pooled:
        settings["frames"] = pooled["frames"]
    return settings


def fold_of(config: dict, subjects: Sequence[str], persons: Sequence[str] | None = None):
    """The run's `Fold` (train/val/test subjects): from `data.folds_file`, else made from the subjects.

    With `persons` (per item, as `subjects`) and `data.group_persons` on, the split is made over persons, so a
    person with two subject ids (SynthFER-3D's F0001 scans and F001 sequences) is on one side. A run on several
    caches splits each cache's subjects on their own, so adding a cache to a run leaves the other caches'
    train/validation/test subjects as they were (a model fine-tuned on more data is still selected and tested
    on subjects it never trained on)."""
    from affectvlm.data.folds import Fold, load_folds

    d = config["data"]
    if d["folds_file"]:
        return _covered(_pick(load_folds(d["folds_file"]), d["fold"]), subjects, d)
    person = dict(zip(subjects, persons)) if persons is not None and d.get("group_persons", True) else {}
    names = cache_names(cache_folders(d["cache_dir"])) if d["source"] == "cache" else []
    if len(names) < 2:
        return _made_fold(d, subjects, person)
    parts = []
    for n in names:
        mine = {s[len(n) + 1 :]: p for s, p in person.items() if s.startswith(n + "/")}
        parts.append(_made_fold(d, [s[len(n) + 1 :] for s in subjects if s.startswith(n + "/")], mine, n))
    return Fold(
        d["fold"],
        *(tuple(sorted(s for f in parts for s in getattr(f, side))) for side in ("train", "val", "test")),
    )


def _covered(fold, subjects: Sequence[str], d: dict):
    """A folds file's fold, if the run has samples of every subject it names (else the run would quietly train
    and test on fewer: a protocol's other subjects, or subjects without samples of the run's labels)."""
    missing = sorted(set(fold.train + fold.val + fold.test) - set(subjects))
    if missing:
        where = d["cache_dir"] if d["source"] == "cache" else "the toy data"
        raise DataError(
            f"data.folds_file={d['folds_file']}: fold {fold.index} names {len(missing)} subject(s) with no "
            f"samples of labels {list(d['labels'])} in {where}, e.g. {', '.join(missing[:5])}: make the "
            f"folds from the cache (python -m affectvlm.data folds --cache CACHE --labels "
            f"{','.join(d['labels'])} --out FOLDS) or render those subjects"
        )
    return fold


def _made_fold(d: dict, subjects: Sequence[str], person: dict, prefix: str | None = None):
    from affectvlm.data.folds import Fold, subject_folds

    folds = subject_folds(
        sorted(set(subjects)),
        k=d["k"],
        seed=d["fold_seed"],
        val_fraction=d["val_fraction"],
        person=person.__getitem__ if person else None,
    )
    fold = _pick(folds, d["fold"])
    if prefix is None:
        return fold
    sides = (tuple(f"{prefix}/{s}" for s in getattr(fold, side)) for side in ("train", "val", "test"))
    return Fold(fold.index, *sides)


def _pick(folds: list, index: int):
    if not 0 <= index < len(folds):
        raise ValueError(f"data.fold={index} but there are {len(folds)} folds")
    return folds[index]


def split_dataset(ds: ViewsDataset, fold) -> tuple[ViewsDataset, ViewsDataset, ViewsDataset]:
    sides = {"train": [], "val": [], "test": []}
    for i, subject in enumerate(ds.subjects):
        side = fold.side(subject)
        if side is not None:
            sides[side].append(i)
    return ds.subset(sides["train"]), ds.subset(sides["val"]), ds.subset(sides["test"])


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------


class EpochBatchSampler(torch.utils.data.Sampler):
    """Global training batches: a seeded permutation per epoch, cut into full batches of `batch_size`.

    The order is a pure function of (seed, epoch), and `set_position(epoch, start)` skips the first `start`
    batches, so a resumed run reads exactly the batches the interrupted one would have (this state is the
    data position in a checkpoint). Batches per epoch are rounded down to a multiple of `multiple_of` (the
    gradient-accumulation steps), so an epoch always ends on an optimizer step. Under accelerate with
    `split_batches=True` every process iterates the same global batches and takes its own slice.
    With `weights` (one per sample, e.g. from `class_balance_weights`) an epoch is instead `num_samples` draws
    with replacement in proportion to them, still a pure function of (seed, epoch).
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, multiple_of: int = 1, weights=None
    ) -> None:
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.batches_per_epoch = (num_samples // batch_size) // multiple_of * multiple_of
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_samples} training samples do not fill {multiple_of} batch(es) of {batch_size}: "
                "lower train.batch_size or train.grad_accum"
            )
        self.weights = None
        if weights is not None:
            self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if (
                self.weights.shape != (num_samples,)
                or not (self.weights >= 0).all()
                or self.weights.sum() <= 0
            ):
                raise ValueError(f"weights must be {num_samples} non-negative numbers, not all zero")
        self.epoch, self.start = 0, 0
        self.drop_last = True  # read by accelerate's BatchSamplerShard: every batch is full

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        for b in range(self.start, self.batches_per_epoch):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def class_balance_weights(
    labels: Sequence, power: float, groups: Sequence | None = None
) -> np.ndarray | None:
    """Per-sample draw weights: within each group (dataset), (the sample's label count) ** -power, scaled so
    that the group keeps its share of the draws (its share of the samples). None for power 0 (shuffling)."""
    if power == 0:
        return None
    labels = np.asarray(labels)
    groups = np.zeros(len(labels), dtype=np.int64) if groups is None else np.asarray(groups)
    weights = np.empty(len(labels), dtype=np.float64)
    for g in np.unique(groups):
        inside = groups == g
        _, inverse, counts = np.unique(labels[inside], return_inverse=True, return_counts=True)
        w = counts[inverse].astype(np.float64) ** -float(power)
        weights[inside] = w * inside.sum() / w.sum()  # the group's total draw share is unchanged
    return weights
