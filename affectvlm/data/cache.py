"""The render cache: each sample's views rendered once, stored as uint8 memory-mapped shards, read fast.

    prepare_cache("bu3dfe", "/data/BU-3DFE", "/cache")          # or dataset="synth" (no meshes written)
    ds = RenderCacheDataset("/cache/bu3dfe-1a2b3c4d5e6f")
    batch = ds[[0, 5, 9]]  # {"pixel_values": (3, V, H, W, 3) uint8, "labels": (3,) int64, "index": (3,)}

Layout of a cache folder ``<out>/<dataset>-<settings hash>/`` (``synth<kind>-<config hash>-<settings hash>`` for
SynthFER-3D, whose data depends on its generator config too)::

    cache.json          format, dataset, render settings, label vocabulary, the plan (items, shard size)
    shards/00000.npy    (n, V, H, W, 3) uint8, one row per rendered sample (numpy .npy, memory-mapped)
    shards/00000.json   the rows' index entries and the shard's bad samples; written after the .npy, so
                        its presence marks the shard done (resuming skips it)
    index.json          all entries: key, shard, row, label, label_id, subject, intensity, dataset, metadata
    report.json         every sample that could not be rendered, with the error (never silently dropped); for
                        SynthFER-3D v2 also `counts`: samples per dataset, label and face model, evaluation-only
                        samples, realism kinds applied

The folder name carries a hash of the render settings, so changing views, size or mode renders a new cache
beside the old one instead of mixing them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scan.recipe import ScanRecipe
from .synth import EMOTIONS

__all__ = [
    "CACHE_FORMAT",
    "RenderCacheDataset",
    "RenderSettings",
    "WorkItem",
    "plan_dataset",
    "plan_synth",
    "prepare_cache",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "affectvlm-render-cache/1"
_RENDER_ERRORS = (ValueError, OSError, RuntimeError, IndexError)  # ScanError is a ValueError


@dataclass(frozen=True)
class RenderSettings(ScanRecipe):
    """How samples are rendered: a :class:`affectvlm.scan.ScanRecipe` (views, size, mode, crop_radius, align,
    frames: the recipe a model trained on the cache saves with its processor) plus `batch`, the static scans
    rendered per call (batching does not change the pixels). The cache folder is keyed by a hash of the recipe."""

    batch: int = 25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch < 1:
            raise ValueError(f"batch >= 1 required, got {self}")

    @property
    def recipe(self) -> ScanRecipe:
        return ScanRecipe(**self.to_dict())

    def key(self) -> str:
        """12 hex digits of the sha256 of the settings that change the pixels."""
        return _hash(self.to_dict())[:12]


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


@dataclass(frozen=True)
class WorkItem:
    """One sample to render: files (`paths`) or a SynthFER-3D spec (`synth`: subject index, label, intensity)."""

    key: str
    label: str
    subject: str
    intensity: int | None
    dataset: str
    sequence: bool
    paths: tuple[str, ...] = ()
    synth: tuple | None = None
    metadata: dict = dataclasses.field(default_factory=dict, compare=False)

    def entry(self) -> dict:
        return {
            "key": self.key, "label": self.label, "subject": self.subject, "intensity": self.intensity,
            "dataset": self.dataset, "sequence": self.sequence, "metadata": self.metadata,
        }  # fmt: skip


def plan_dataset(samples) -> list[WorkItem]:
    """Work items for reader samples (:class:`affectvlm.data.datasets.Sample`)."""
    return [
        WorkItem(
            key=s.key,
            label=s.label,
            subject=s.subject,
            intensity=s.intensity,
            dataset=s.dataset,
            sequence=s.is_sequence,
            paths=tuple(s.paths),
            metadata=dict(s.metadata),
        )  # fmt: skip
        for s in samples
    ]


def plan_synth(config, kind: str = "both", sfm_dir=None, ict_dir=None) -> list[WorkItem]:
    """Work items that generate SynthFER-3D samples in memory (no mesh files): ``3d`` the static scans (25 per
    subject, + the compounds with ``config.compound``), ``4d`` the sequences (six per subject, + neutral and the
    compounds when asked), or ``both``. Each item's metadata is the sample's
    (:meth:`affectvlm.data.synth.SynthFER3D.sample_metadata`: face model, licence, ``evaluation_only``, AU
    weights, ...)."""
    from .synth import SynthFER3D

    if kind not in ("3d", "4d", "both"):
        raise ValueError(f"kind must be '3d', '4d' or 'both', got {kind!r}")
    gen = SynthFER3D(config, sfm_dir, ict_dir)
    listed = []
    if kind in ("3d", "both"):
        listed += [(it, False) for it in gen.static_items()]
    if kind in ("4d", "both"):
        listed += [(it, True) for it in gen.sequence_items()]
    items = []
    for it, sequence in listed:
        s, label = gen.subject(it["subject_index"]), it["label"]
        subject = s.bu4dfe_id if sequence else s.subject_id
        items.append(
            WorkItem(
                key=f"synth4d/{subject}/{label}"
                if sequence
                else f"synth3d/{subject}/{label}{it['intensity']}",
                label=label,
                subject=subject,
                intensity=it["intensity"],
                dataset="synth4d" if sequence else "synth3d",
                sequence=sequence,
                synth=(s.index, label, it["intensity"]),
                metadata=gen.sample_metadata(s.index, label, it["intensity"]),
            )  # fmt: skip
        )
    return items


def label_vocabulary(labels) -> list[str]:
    """The six emotions, then neutral, then any other label sorted: label ids are stable across datasets."""
    extra = sorted(set(labels) - set(EMOTIONS) - {"neutral"})
    return [*EMOTIONS, "neutral", *extra]


# --- rendering --------------------------------------------------------------------------------------------


class _Renderer:
    """Turns work items into (V, H, W, 3) uint8 images with the scan pipeline; built once per process."""

    def __init__(self, settings: RenderSettings, synth_config=None, sfm_dir=None, ict_dir=None):
        self.settings = settings
        self.gen = None
        self.realism: dict[str, tuple] = {}  # item key -> realism kinds applied to its (first) scan
        if synth_config is not None:
            from .synth import SynthFER3D

            self.gen = SynthFER3D(synth_config, sfm_dir, ict_dir)

    def static_scans(self, item: WorkItem):
        if item.synth is not None:
            subject, label, level = item.synth
            scan = self.gen.scan(subject, label, level or 1)
            self.realism[item.key] = scan.realism
            return scan.to_scan(path=item.key)
        from ..scan import load_scan

        return load_scan(item.paths[0])

    def sequence_scans(self, item: WorkItem) -> list:
        n = self.settings.frames
        if item.synth is not None:
            subject, label, _ = item.synth
            sequence = self.gen.sequence(subject, label, num_frames=n)
            self.realism[item.key] = sequence.realism
            return sequence.to_scans(path_prefix=item.key)
        from ..scan import load_scan

        # a dataset's capture (BU-4DFE: neutral, onset, apex, offset, neutral) pooled over the span the predictor
        # pools (`ScanRecipe.pooled_frames`), so that a model trains on what it will be given
        read = functools.cache(lambda i: load_scan(item.paths[i]))
        return [read(i) for i in self.settings.recipe.pooled_frames(len(item.paths), read)]

    def render_static(self, items: list[WorkItem]) -> list:
        """Render static items in one batch; per-item failures come back as exceptions in the list."""
        recipe = self.settings.recipe
        scans, out = [], [None] * len(items)
        for i, item in enumerate(items):
            try:
                scans.append((i, recipe.normalize(self.static_scans(item))))
            except _RENDER_ERRORS as err:
                out[i] = err
        if scans:
            try:
                images = recipe.views_of([s for _, s in scans]).numpy()  # (B, V, H, W, 3)
                for (i, _), img in zip(scans, images):
                    out[i] = img
            except _RENDER_ERRORS:
                # one bad scan should not take its batch down: retry one by one to find it
                for i, scan in scans:
                    try:
                        out[i] = recipe.views_of([scan])[0].numpy()
                    except _RENDER_ERRORS as err:
                        out[i] = err
        return out

    def render_sequence(self, item: WorkItem):
        try:
            # one nose tip and scale for the whole sequence, so the head motion that rank pooling should see is
            # kept rather than re-centred away frame by frame
            return self.settings.recipe.dynamic_images(self.sequence_scans(item)).numpy()  # (V, H, W, 3)
        except _RENDER_ERRORS as err:
            return err


_WORKER: dict = {}


def _render_shard(job: dict) -> dict:
    """Render one shard and write it (worker entry point; also called in-process)."""
    key = (job["settings"], job["synth_config"], job["sfm_dir"], job.get("ict_dir"))
    if _WORKER.get("key") != key:
        _WORKER["key"], _WORKER["renderer"] = key, _Renderer(*key)
    renderer: _Renderer = _WORKER["renderer"]
    items: list[WorkItem] = job["items"]
    images, entries, bad = [], [], []
    statics = [(i, it) for i, it in enumerate(items) if not it.sequence]
    results: list = [None] * len(items)
    progress = job.get("progress") or (lambda n: None)
    b = renderer.settings.batch
    for start in range(0, len(statics), b):
        chunk = statics[start : start + b]
        for (i, _), res in zip(chunk, renderer.render_static([it for _, it in chunk])):
            results[i] = res
        progress(len(chunk))
    for i, it in enumerate(items):
        if it.sequence:
            results[i] = renderer.render_sequence(it)
            progress(1)
    realism = job["synth_config"] is not None and job["synth_config"].realism is not None
    for it, res in zip(items, results):
        kinds = renderer.realism.pop(it.key, ())
        if isinstance(res, Exception):
            error = f"{type(res).__name__}: {res}"
            logger.warning("skipping %s (%s): %s", it.key, it.paths[0] if it.paths else "synth", error)
            bad.append({**it.entry(), "paths": list(it.paths), "error": error})
            continue
        entry = {**it.entry(), "shard": job["shard"], "row": len(images)}
        if realism:  # the kinds applied to this sample (SynthFER-3D with realism), counted in report.json
            entry["realism"] = list(kinds)
        entries.append(entry)
        images.append(np.asarray(res, dtype=np.uint8))
    _write_shard(Path(job["folder"]), job["shard"], images, entries, bad)
    return {"shard": job["shard"], "rendered": len(entries), "bad": len(bad)}


def _shard_paths(folder: Path, shard: int) -> tuple[Path, Path]:
    return folder / "shards" / f"{shard:05d}.npy", folder / "shards" / f"{shard:05d}.json"


def _write_shard(folder: Path, shard: int, images: list, entries: list, bad: list) -> None:
    npy, meta = _shard_paths(folder, shard)
    npy.parent.mkdir(parents=True, exist_ok=True)
    shape = images[0].shape if images else (0,)
    arr = np.stack(images) if images else np.zeros((0, *shape), np.uint8)
    # temp + rename, .npy before .json: a shard is done only once both exist, so a kill at any point
    # leaves either a finished shard or one that is rendered again
    tmp = npy.with_suffix(".npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, npy)
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"entries": entries, "bad": bad}))
    os.replace(tmp, meta)


def prepare_cache(
    dataset: str,
    root=None,
    out=".",
    settings: RenderSettings | None = None,
    *,
    samples=None,
    synth_config=None,
    synth_kind: str = "both",
    sfm_dir=None,
    ict_dir=None,
    shard_size: int = 250,
    workers: int = 1,
    progress: bool = True,
    max_shards: int | None = None,
) -> Path:
    """Render a dataset into a cache folder (resumable: finished shards are kept and skipped).

    Args:
        dataset: ``bu3dfe``, ``bosphorus``, ``bu4dfe``, ``bp4d`` (read from `root` with
            :func:`affectvlm.data.datasets.read_dataset`) or ``synth`` (generated in memory from
            `synth_config`, no mesh files; `synth_kind` ``3d``, ``4d`` or ``both``; the face models from
            `sfm_dir` and `ict_dir`, each loaded only when the config uses it).
        root: the dataset folder (not used for ``synth``).
        out: the parent folder; the cache is ``<out>/<dataset>-<settings.key()>`` (for ``synth``:
            ``<out>/synth<kind>-<hash of the SynthConfig and kind>-<settings.key()>``).
        settings: render settings (default :class:`RenderSettings`).
        samples: an explicit sample list (e.g. a protocol selection) instead of the whole dataset.
        shard_size: samples per shard (also the unit of resumption).
        workers: processes rendering shards in parallel (1: in this process).
        max_shards: stop after rendering this many shards (to test resumption).

    Returns:
        The cache folder.
    """
    from tqdm.auto import tqdm

    settings = settings or RenderSettings()
    if dataset == "synth":
        from .synth import SynthConfig

        synth_config = synth_config or SynthConfig()
        items = plan_synth(synth_config, synth_kind, sfm_dir, ict_dir)
        source = {"synth_config": synth_config.to_dict(), "synth_kind": synth_kind}
    else:
        from .datasets import read_dataset

        if samples is None:
            if root is None:
                raise ValueError(f"dataset {dataset!r} needs a root folder")
            samples = read_dataset(dataset, root)
        items = plan_dataset(samples)
        synth_config = None
        source = {"root": str(root) if root is not None else None}
    name = f"{dataset}-{settings.key()}"
    if dataset == "synth":
        # the data itself is a function of the generator config: another seed or preset is another cache
        name = f"synth{synth_kind}-{_hash([synth_config.to_dict(), synth_kind])[:8]}-{settings.key()}"
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    # the plan: what is rendered, in which shards; resuming a folder with another plan would mix data
    plan = _hash([[it.key, *it.paths] for it in items] + [source])[:16]
    header = {
        "format": CACHE_FORMAT, "dataset": dataset, "settings": settings.to_dict(), "settings_key": settings.key(),
        "labels": label_vocabulary(it.label for it in items), "plan": {"items": len(items), "shard_size": shard_size, "hash": plan},
        "source": source, "views": _resolved_views(settings),
    }  # fmt: skip
    info = folder / "cache.json"
    if info.is_file():
        old = json.loads(info.read_text())
        if old.get("plan") != header["plan"]:
            raise ValueError(
                f"{folder} was prepared for a different sample list or shard size ({old.get('plan')}); "
                "remove it or choose another --out"
            )
    info.write_text(json.dumps(header, indent=1, default=list) + "\n")
    shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    todo = [k for k in range(len(shards)) if not all(p.is_file() for p in _shard_paths(folder, k))]
    done_items = sum(len(shards[k]) for k in range(len(shards)) if k not in set(todo))
    if max_shards is not None:
        todo = todo[:max_shards]
    jobs = [
        {
            "settings": settings,
            "synth_config": synth_config,
            "sfm_dir": sfm_dir,
            "ict_dir": ict_dir,
            "items": shards[k],
            "shard": k,
            "folder": str(folder),
        }
        for k in todo
    ]
    t0 = time.perf_counter()
    with tqdm(
        total=len(items), initial=done_items, desc=f"render {dataset}", unit="sample", disable=not progress
    ) as bar:
        if workers <= 1:
            for job in jobs:
                _render_shard({**job, "progress": bar.update})
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: a forked child of a process that has started torch's thread pool can deadlock
            with ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
            ) as pool:
                futures = {pool.submit(_render_shard, job): len(job["items"]) for job in jobs}
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(futures[fut])
    logger.info("rendered %d shards of %s in %.1f s", len(jobs), dataset, time.perf_counter() - t0)
    if all(all(p.is_file() for p in _shard_paths(folder, k)) for k in range(len(shards))):
        # a SynthFER-3D v2 cache's report counts what it holds; every other report stays as it was
        counted = dataset == "synth" and not synth_config.is_v1
        _write_index(folder, len(shards), header["labels"], counted)
    return folder


def _resolved_views(settings: RenderSettings) -> list:
    """The (yaw, pitch) views actually rendered, with names when they are the pipeline's defaults, so that
    readers of the cache (training, the processor) know which image is which view."""
    from ..scan import DEFAULT_VIEWS, VIEW_NAMES

    if settings.views is None:
        return [{"name": n, "yaw": y, "pitch": p} for n, (y, p) in zip(VIEW_NAMES, DEFAULT_VIEWS)]
    return [{"name": None, "view": list(v) if isinstance(v, tuple) else v} for v in settings.views]


def _init_worker() -> None:
    # one intra-op thread per worker process: the processes are the parallelism
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _write_index(folder: Path, num_shards: int, labels: list[str], counted: bool = False) -> None:
    entries, bad = [], []
    for k in range(num_shards):
        meta = json.loads(_shard_paths(folder, k)[1].read_text())
        entries += meta["entries"]
        bad += meta["bad"]
    ids = {name: i for i, name in enumerate(labels)}
    for e in entries:
        e["label_id"] = ids[e["label"]]
    (folder / "index.json").write_text(json.dumps({"labels": labels, "entries": entries}) + "\n")
    report = {"rendered": len(entries), "bad": bad, **({"counts": _counts(entries)} if counted else {})}
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if bad:
        logger.warning("%d samples could not be rendered; see %s", len(bad), folder / "report.json")


def _counts(entries: list[dict]) -> dict:
    """What a cache holds, counted over its rendered entries: samples per dataset, label and face model,
    evaluation-only samples, and how often each realism kind was applied (SynthFER-3D with realism)."""
    counts: dict[str, dict] = {"dataset": {}, "label": {}, "face_model": {}, "realism": {}}

    def add(group: str, key) -> None:
        counts[group][key] = counts[group].get(key, 0) + 1

    evaluation_only = 0
    for e in entries:
        add("dataset", e["dataset"])
        add("label", e["label"])
        meta = e.get("metadata") or {}
        if "face_model" in meta:
            add("face_model", meta["face_model"])
        evaluation_only += bool(meta.get("evaluation_only"))
        for kind in e.get("realism", ()):
            add("realism", kind)
    return {**{k: dict(sorted(v.items())) for k, v in counts.items()}, "evaluation_only": evaluation_only}


# --- reading ----------------------------------------------------------------------------------------------


def _torch_dataset_base():
    import torch.utils.data

    return torch.utils.data.Dataset


class RenderCacheDataset(_torch_dataset_base()):
    """A torch ``Dataset`` over a prepared cache.

    Args:
        folder: the cache folder (``<out>/<dataset>-<hash>``).
        subjects: keep only these subjects (e.g. a fold's ``train``), or None for all.
        labels: keep only these labels, or None.

    Items: ``ds[i]`` -> ``{"pixel_values": (V, H, W, 3) uint8, "labels": () int64, "index": () int64}``;
    ``ds[[i, j, ...]]`` (and ``__getitems__``, which ``DataLoader`` uses) returns the batched dict
    ``{"pixel_values": (B, V, H, W, 3), "labels": (B,), "index": (B,)}`` with one memmap read per shard, so
    that a loader with ``collate_fn=RenderCacheDataset.collate`` never copies a batch twice. The processor's
    ``normalize_views`` turns the uint8 views into model inputs. ``entries[i]`` holds the sample's metadata.
    """

    def __init__(self, folder, subjects=None, labels=None):
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{index} missing: the cache is not complete; run `python -m affectvlm.data prepare` again to finish it"
            )
        doc = json.loads(index.read_text())
        self.labels: list[str] = doc["labels"]
        entries = doc["entries"]
        if subjects is not None:
            keep = set(subjects)
            entries = [e for e in entries if e["subject"] in keep]
        if labels is not None:
            keep = set(labels)
            entries = [e for e in entries if e["label"] in keep]
        self.entries = entries
        self._shard = np.array([e["shard"] for e in entries], dtype=np.int64)
        self._row = np.array([e["row"] for e in entries], dtype=np.int64)
        self._label = np.array([e["label_id"] for e in entries], dtype=np.int64)
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _array(self, shard: int) -> np.ndarray:
        arr = self._arrays.get(shard)
        if arr is None:  # opened lazily, per process (DataLoader workers each map their own)
            arr = self._arrays[shard] = np.load(_shard_paths(self.folder, shard)[0], mmap_mode="r")
        return arr

    @property
    def subjects(self) -> list[str]:
        return sorted({e["subject"] for e in self.entries})

    def read(self, indices) -> np.ndarray:
        """(B, V, H, W, 3) uint8 views of the samples `indices` (grouped by shard, rows sorted)."""
        idx = np.asarray(indices, dtype=np.int64)
        first = self._array(int(self._shard[idx[0]])) if len(idx) else None
        out = np.empty((len(idx), *first.shape[1:]) if first is not None else (0,), np.uint8)
        shards = self._shard[idx]
        for shard in np.unique(shards):
            pos = np.flatnonzero(shards == shard)
            rows = self._row[idx[pos]]
            order = np.argsort(rows)  # sorted rows read the memmap front to back
            out[pos[order]] = self._array(int(shard))[rows[order]]
        return out

    def __getitem__(self, i):
        import torch

        if isinstance(i, list | tuple | np.ndarray) or (hasattr(i, "dim") and i.dim() == 1):
            return self.__getitems__(list(np.asarray(i)))
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        return {
            "pixel_values": torch.from_numpy(np.array(self._array(int(self._shard[i]))[self._row[i]])),
            "labels": torch.tensor(self._label[i]),
            "index": torch.tensor(i),
        }

    def __getitems__(self, indices) -> dict:
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        return {
            "pixel_values": torch.from_numpy(self.read(idx)),
            "labels": torch.from_numpy(self._label[idx]),
            "index": torch.from_numpy(idx),
        }

    @staticmethod
    def collate(batch):
        """``collate_fn`` for a ``DataLoader``: a batched dict passes through; a list of items is stacked."""
        if isinstance(batch, dict):
            return batch
        import torch

        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    def report(self) -> dict:
        """The cache's report: ``{"rendered": n, "bad": [{key, paths, error, ...}]}``, and for SynthFER-3D v2
        ``"counts"`` (per dataset, label, face model, realism kind; evaluation-only samples)."""
        return json.loads((self.folder / "report.json").read_text())
