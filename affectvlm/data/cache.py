"""The render cache: each sample's views rendered once, stored as uint8 memory-mapped shards, read fast.

    prepare_cache("bu3dfe", "/data/BU-3DFE", "/cache")          # or dataset="synth" (no meshes written)
    ds = RenderCacheDataset("/cache/bu3dfe-1a2b3c4d5e6f")
    batch = ds[[0, 5, 9]]  # {"pixel_values": (3, V, H, W, 3) uint8, "labels": (3,) int64, "index": (3,)}

Layout of a cache folder ``<out>/<dataset>-<settings hash>/`` (``<dataset>-<selection>-<settings hash>`` for a
selection such as a protocol, ``bu3dfe-subset1-...``; ``synth<kind>-<config hash>-<settings hash>`` for
SynthFER-3D, whose data depends on its generator config too)::

    cache.json          format, dataset, render settings, label vocabulary, the plan (items, shard size)
    shards/00000.npy    (n, V, H, W, 3) uint8, one row per rendered sample (numpy .npy, memory-mapped)
    shards/00000.json   the rows' index entries and the shard's bad samples; written after the .npy, so
                        its presence marks the shard done (resuming skips it)
    index.json          all entries: key, shard, row, label, label_id, subject, intensity, dataset, metadata
    report.json         every sample that could not be rendered or is no face (the predictor's face check), with
                        the error (never silently dropped); for a dataset also `notes`: what its reader skipped
                        (malformed names, duplicates), each unreadable frame left out of a sequence and each face the
                        check doubts (kept); for
                        SynthFER-3D v2 also `counts`: samples per dataset, label and face model, evaluation-only
                        samples, realism kinds applied

The folder name carries a hash of the render settings, so changing views, size or mode renders a new cache
beside the old one instead of mixing them. A rerun resumes a folder whose finished shards hold the samples it
plans for them (read from any path; in the folder's own shard size) and renders its bad samples again (a repaired
file is picked up); a folder holding another sample list is refused with :class:`CacheError`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..scan.recipe import ScanRecipe
from ..scan.types import InputError, ScanError
from .synth import EMOTIONS

__all__ = [
    "CACHE_FORMAT",
    "CacheError",
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
        """12 hex digits of the sha256 of the settings that change the pixels (`recorded_settings`)."""
        return _hash(recorded_settings(self.to_dict()))[:12]


def recorded_settings(settings: dict) -> dict:
    """Render settings as a cache records and compares them: `orient` (added in stop 58) only when it is not
    "auto", so that the caches rendered before it keep their folder names and train beside newer ones."""
    return {k: v for k, v in settings.items() if (k, v) != ("orient", "auto")}


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
    """Work items for reader samples (:class:`affectvlm.data.datasets.Sample`), their paths made absolute."""
    return [
        WorkItem(
            key=s.key,
            label=s.label,
            subject=s.subject,
            intensity=s.intensity,
            dataset=s.dataset,
            sequence=s.is_sequence,
            paths=tuple(os.path.abspath(p) for p in s.paths),
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


class _BadFrame(Exception):
    """A sequence's frame that cannot be read (`path`, the reader's `error`)."""

    def __init__(self, path: str, error: Exception):
        super().__init__(path)
        self.path, self.error = path, error


class _Renderer:
    """Turns work items into (V, H, W, 3) uint8 images with the scan pipeline; built once per process."""

    def __init__(self, settings: RenderSettings, synth_config=None, sfm_dir=None, ict_dir=None):
        self.settings = settings
        self.gen = None
        self.realism: dict[str, tuple] = {}  # item key -> realism kinds applied to its (first) scan
        self.notes: dict[str, list[str]] = {}  # item key -> what report.json should say of it (file: why)
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

        return load_scan(item.paths[0], load_texture=self.settings.recipe.needs_texture)

    def sequence_scans(self, item: WorkItem) -> list:
        n = self.settings.frames
        if item.synth is not None:
            subject, label, _ = item.synth
            sequence = self.gen.sequence(subject, label, num_frames=n)
            self.realism[item.key] = sequence.realism
            return sequence.to_scans(path_prefix=item.key)
        # a dataset's capture (BU-4DFE: neutral, onset, apex, offset, neutral) pooled over the span the predictor
        # pools (`ScanRecipe.pooled_frames`), so that a model trains on what it will be given. A frame that cannot
        # be read is left out (as a gap in the numbering is) and the frames are picked again from the others, while
        # at least half of them, and two, remain; each frame is read once.
        paths, skipped = list(item.paths), []
        read = functools.cache(functools.partial(_read_frame, load_texture=self.settings.recipe.needs_texture))
        while True:
            try:
                picked = self.settings.recipe.pooled_frames(len(paths), lambda i: read(paths[i]))
                break
            except _BadFrame as bad:
                skipped.append(f"{bad.path}: frame left out of {item.key} ({type(bad.error).__name__}: {bad.error})")
                paths.remove(bad.path)
                if len(paths) < max(2, (len(item.paths) + 1) // 2):
                    raise ScanError(
                        f"{len(skipped)} of {len(item.paths)} frames cannot be read, too few left to pool; "
                        f"first: {skipped[0]}"
                    ) from None
        self.notes.setdefault(item.key, []).extend(f"{n}; pooled from its other frames" for n in skipped)
        return [read(paths[i]) for i in picked]

    def render_static(self, items: list[WorkItem]) -> list:
        """Render static items in one batch; per-item failures come back as exceptions in the list."""
        recipe = self.settings.recipe
        scans, out = [], [None] * len(items)
        for i, item in enumerate(items):
            try:
                scans.append((i, recipe.normalize(self.static_scans(item))))
            except _RENDER_ERRORS as err:
                out[i] = err
        if not scans:
            return out
        try:
            images = list(recipe.views_of([s for _, s in scans]).numpy())  # (B, V, H, W, 3)
        except _RENDER_ERRORS:
            images = [self._render_one(scan) for _, scan in scans]  # one bad scan must not take its batch down
        for (i, scan), img in zip(scans, images):
            out[i] = img if isinstance(img, Exception) else self._face_checked(items[i], scan, img)
        return out

    def _render_one(self, scan):
        try:
            return self.settings.recipe.views_of([scan])[0].numpy()
        except _RENDER_ERRORS as err:
            return err

    def _face_checked(self, item: WorkItem, scan, views: np.ndarray):
        """`views`, or the error that leaves a dataset's file out, as the predictor does with the same check
        (:func:`affectvlm.scan.recipe.check_face`: too few points, an almost empty frontal view). What that check
        only notes (no nose stands out; real faces can fall under its bar) keeps the sample, noted in the report.
        SynthFER-3D samples are faces by construction: not checked."""
        from ..scan.recipe import check_face

        if item.synth is not None:
            return views
        try:
            notes = check_face(scan, torch.from_numpy(np.asarray(views))).notes
        except InputError as err:
            return err
        path = scan.path or item.paths[0]
        self.notes.setdefault(item.key, []).extend(f"{path}: the predictor's face check: {n} (kept)" for n in notes)
        return views

    def render_sequence(self, item: WorkItem):
        recipe = self.settings.recipe
        try:
            scans = self.sequence_scans(item)
            # one nose tip and scale for the whole sequence, so the head motion that rank pooling should see is
            # kept rather than re-centred away frame by frame
            dynamic = recipe.dynamic_images(scans).numpy()  # (V, H, W, 3)
            if item.synth is not None:
                return dynamic
            apex = recipe.normalize(scans[-1])  # what the predictor checks of a sequence: its apex frame
            checked = self._face_checked(item, apex, recipe.views_of([apex])[0].numpy())
            return checked if isinstance(checked, Exception) else dynamic
        except _RENDER_ERRORS as err:
            return err


def _read_frame(path: str, load_texture: bool = True):
    from ..scan import load_scan

    try:
        return load_scan(path, load_texture=load_texture)
    except _RENDER_ERRORS as err:
        raise _BadFrame(path, err) from None


_WORKER: dict = {}


def _render_items(renderer: _Renderer, items: list[WorkItem], progress) -> list:
    """Each item's (V, H, W, 3) images or the exception that stopped it: static scans in batches, then sequences."""
    results: list = [None] * len(items)
    statics = [(i, it) for i, it in enumerate(items) if not it.sequence]
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
    return results


def _render_shard(job: dict) -> dict:
    """Render one shard and write it (worker entry point; also called in-process). A retry (``job["retry"]``)
    renders again only the samples the finished shard lists as bad and keeps the rows it holds; the shard's files
    are rewritten only when one of them rendered this time."""
    key = (job["settings"], job["synth_config"], job["sfm_dir"], job.get("ict_dir"))
    if _WORKER.get("key") != key:
        _WORKER["key"], _WORKER["renderer"] = key, _Renderer(*key)
    renderer: _Renderer = _WORKER["renderer"]
    folder, items = Path(job["folder"]), job["items"]
    kept = _shard_rows(folder, job["shard"]) if job.get("retry") else {}
    todo = [it for it in items if it.key not in kept]
    results = dict(zip([it.key for it in todo], _render_items(renderer, todo, job.get("progress") or (lambda n: None))))
    realism = job["synth_config"] is not None and job["synth_config"].realism is not None
    images, entries, bad = [], [], []
    for it in items:
        if it.key in kept:
            entry, image = kept[it.key]
            entries.append({**entry, "row": len(images)})
            images.append(image)
            continue
        res, kinds, notes = results[it.key], renderer.realism.pop(it.key, ()), renderer.notes.pop(it.key, [])
        if isinstance(res, Exception):
            error = f"{type(res).__name__}: {res}"
            logger.warning("skipping %s (%s): %s", it.key, it.paths[0] if it.paths else "synth", error)
            bad.append({**it.entry(), "paths": list(it.paths), "error": error})
            continue
        entry = {**it.entry(), "shard": job["shard"], "row": len(images)}
        if realism:  # the kinds applied to this sample (SynthFER-3D with realism), counted in report.json
            entry["realism"] = list(kinds)
        if notes:  # frames of a sequence left out, a doubtful face check: listed in report.json's notes
            entry["notes"] = notes
        entries.append(entry)
        images.append(np.asarray(res, dtype=np.uint8))
    if kept and len(entries) == len(kept):  # nothing new: the rows stay, the errors are this run's
        _write_json(_shard_paths(folder, job["shard"])[1], {"entries": entries, "bad": bad})
    else:
        _write_shard(folder, job["shard"], images, entries, bad)
    return {"shard": job["shard"], "rendered": len(entries), "bad": len(bad)}


def _shard_paths(folder: Path, shard: int) -> tuple[Path, Path]:
    return folder / "shards" / f"{shard:05d}.npy", folder / "shards" / f"{shard:05d}.json"


def _shard_meta(folder: Path, shard: int) -> dict | None:
    """A finished shard's index entries and bad samples; None while it is not finished."""
    npy, meta = _shard_paths(folder, shard)
    return json.loads(meta.read_text()) if npy.is_file() and meta.is_file() else None


def _shard_rows(folder: Path, shard: int) -> dict:
    """key -> (index entry, its memory-mapped (V, H, W, 3) row) for each sample a finished shard holds."""
    arr = np.load(_shard_paths(folder, shard)[0], mmap_mode="r")
    return {e["key"]: (e, arr[e["row"]]) for e in _shard_meta(folder, shard)["entries"]}


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _write_shard(folder: Path, shard: int, images: list, entries: list, bad: list) -> None:
    npy, meta = _shard_paths(folder, shard)
    npy.parent.mkdir(parents=True, exist_ok=True)
    shape = images[0].shape if images else (0,)
    arr = np.stack(images) if images else np.zeros((0, *shape), np.uint8)
    # temp + rename, .npy before .json: a shard is done only once both exist, so a kill at any point leaves
    # either a finished shard or one that is rendered again (a retried shard's old .json goes first)
    meta.unlink(missing_ok=True)
    tmp = npy.with_suffix(".npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, npy)
    _write_json(meta, {"entries": entries, "bad": bad})


class CacheError(ValueError):
    """A cache folder that this run cannot use (it holds another sample list), saying what differs and what to do."""


def _plan(dataset: str, root, samples, notes, synth_config, synth_kind, sfm_dir, ict_dir, selection) -> tuple:
    """(work items, source, synth config, reader notes) of a run of :func:`prepare_cache`."""
    if dataset == "synth":
        from .synth import SynthConfig

        synth_config = synth_config or SynthConfig()
        items = plan_synth(synth_config, synth_kind, sfm_dir, ict_dir)
        return items, {"synth_config": synth_config.to_dict(), "synth_kind": synth_kind}, synth_config, None
    from .datasets import read_dataset

    if samples is None:
        if root is None:
            raise ValueError(f"dataset {dataset!r} needs a root folder")
        samples = read_dataset(dataset, root)
    notes = list(getattr(samples, "issues", ()) if notes is None else notes)
    # paths made absolute: the same root given relative or absolute is the same sample list
    source = {"root": None if root is None else os.path.abspath(os.path.expanduser(root)), "selection": selection}
    return plan_dataset(samples), source, None, notes


def _folder_name(dataset: str, settings: RenderSettings, synth_config, synth_kind: str, selection) -> str:
    if dataset == "synth":
        # the data itself is a function of the generator config: another seed or preset is another cache
        return f"synth{synth_kind}-{_hash([synth_config.to_dict(), synth_kind])[:8]}-{settings.key()}"
    if not selection:
        return f"{dataset}-{settings.key()}"
    # a selection (a protocol) is another sample list: another folder (bu3dfe-subset1-<hash>)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(selection).lower().removeprefix(f"{dataset}-"))
    return f"{dataset}-{tag}-{settings.key()}"


def _reuse(folder: Path, header: dict, items: list[WorkItem]) -> int:
    """The shard size to render `folder` in: that of its existing cache.json (the unit its finished shards were
    written in), or this run's. A folder whose finished shards each hold exactly the samples this run plans for
    them (the same samples, whatever path they were read from) is resumed; any other is refused (CacheError)."""
    info = folder / "cache.json"
    plan = header["plan"]
    if not info.is_file() or not any((folder / "shards").glob("*.json")):
        return plan["shard_size"]  # nothing rendered yet: nothing to mix
    old = json.loads(info.read_text())
    size = int((old.get("plan") or {}).get("shard_size") or plan["shard_size"])
    if size != plan["shard_size"]:
        logger.warning("%s is rendered in shards of %d samples: keeping that size (asked: %d)", folder, size, plan["shard_size"])
    if (old.get("plan") or {}).get("hash") == plan["hash"]:
        return size
    for k in range(-(-len(items) // size)):
        meta = _shard_meta(folder, k)
        planned = {it.key for it in items[k * size : (k + 1) * size]}
        if meta is not None and {e["key"] for e in meta["entries"] + meta["bad"]} != planned:
            was, now = old.get("source") or {}, header["source"]
            raise CacheError(
                f"{folder} holds another sample list (prepared from {was.get('root')}, selection "
                f"{was.get('selection') or 'all'}, {old['plan']['items']} samples; this run: {now.get('root')}, "
                f"selection {now.get('selection') or 'all'}, {len(items)} samples): remove the folder to render it "
                "again, or choose another --out"
            )
    return size


def prepare_cache(
    dataset: str,
    root=None,
    out=".",
    settings: RenderSettings | None = None,
    *,
    samples=None,
    selection: str | None = None,
    notes: list[str] | None = None,
    synth_config=None,
    synth_kind: str = "both",
    sfm_dir=None,
    ict_dir=None,
    shard_size: int = 250,
    workers: int = 1,
    progress: bool = True,
    max_shards: int | None = None,
) -> Path:
    """Render a dataset into a cache folder (resumable: finished shards are kept and skipped; their bad samples
    are tried again, so that a repaired file is rendered and the report is current).

    Args:
        dataset: ``bu3dfe``, ``bosphorus``, ``bu4dfe``, ``bp4d`` (read from `root` with
            :func:`affectvlm.data.datasets.read_dataset`) or ``synth`` (generated in memory from
            `synth_config`, no mesh files; `synth_kind` ``3d``, ``4d`` or ``both``; the face models from
            `sfm_dir` and `ict_dir`, each loaded only when the config uses it).
        root: the dataset folder (not used for ``synth``).
        out: the parent folder; the cache is ``<out>/<dataset>-<settings.key()>``, or
            ``<out>/<dataset>-<selection>-<settings.key()>`` for a selection (for ``synth``:
            ``<out>/synth<kind>-<hash of the SynthConfig and kind>-<settings.key()>``).
        settings: render settings (default :class:`RenderSettings`).
        samples: an explicit sample list (e.g. a protocol selection) instead of the whole dataset.
        selection: the name of that list (a protocol: ``bu3dfe-subset1``), which names its folder; another
            list in the same folder is refused (:class:`CacheError`).
        notes: what the reader skipped (default ``samples.issues``), listed in report.json's ``notes``.
        shard_size: samples per shard (also the unit of resumption); an existing folder keeps its own.
        workers: processes rendering shards in parallel (1: in this process).
        max_shards: stop after rendering this many new shards (to test resumption).

    Returns:
        The cache folder.
    """
    settings = settings or RenderSettings()
    items, source, synth_config, notes = _plan(
        dataset, root, samples, notes, synth_config, synth_kind, sfm_dir, ict_dir, selection
    )
    folder = Path(out) / _folder_name(dataset, settings, synth_config, synth_kind, selection)
    folder.mkdir(parents=True, exist_ok=True)
    # the plan: what is rendered, in which shards; resuming a folder with another plan would mix data
    plan = _hash([[it.key, *it.paths] for it in items] + [source])[:16]
    header = {
        "format": CACHE_FORMAT, "dataset": dataset, "settings": recorded_settings(settings.to_dict()), "settings_key": settings.key(),
        "labels": label_vocabulary(it.label for it in items), "plan": {"items": len(items), "shard_size": shard_size, "hash": plan},
        "source": source, "views": _resolved_views(settings),
    }  # fmt: skip
    header["plan"]["shard_size"] = shard_size = _reuse(folder, header, items)
    (folder / "cache.json").write_text(json.dumps(header, indent=1, default=list) + "\n")
    shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    metas = [_shard_meta(folder, k) for k in range(len(shards))]
    todo = [k for k, meta in enumerate(metas) if meta is None][:max_shards]
    retry = {k: len(meta["bad"]) for k, meta in enumerate(metas) if meta is not None and meta["bad"]}
    common = {"settings": settings, "synth_config": synth_config, "sfm_dir": sfm_dir, "ict_dir": ict_dir, "folder": str(folder)}
    jobs = [{**common, "items": shards[k], "shard": k, "count": len(shards[k])} for k in todo]
    jobs += [{**common, "items": shards[k], "shard": k, "count": n, "retry": True} for k, n in retry.items()]
    t0 = time.perf_counter()
    _run(jobs, workers, len(items), f"render {dataset}", progress)
    logger.info("rendered %d shards of %s in %.1f s", len(jobs), dataset, time.perf_counter() - t0)
    if all(_shard_meta(folder, k) is not None for k in range(len(shards))):
        # a SynthFER-3D v2 cache's report counts what it holds; every other report stays as it was
        counted = dataset == "synth" and not synth_config.is_v1
        _write_index(folder, len(shards), header["labels"], counted, notes)
    return folder


def _run(jobs: list[dict], workers: int, total: int, desc: str, progress: bool) -> None:
    """Render the shards of `jobs`, in this process or in `workers` processes, with a progress bar."""
    from tqdm.auto import tqdm

    initial = total - sum(job["count"] for job in jobs)
    with tqdm(total=total, initial=max(initial, 0), desc=desc, unit="sample", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                _render_shard({**job, "progress": bar.update})
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a forked child of a process that has started torch's thread pool can deadlock
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
            futures = {pool.submit(_render_shard, job): job["count"] for job in jobs}
            for fut in as_completed(futures):
                fut.result()
                bar.update(futures[fut])


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


def _write_index(folder: Path, num_shards: int, labels: list[str], counted: bool = False, notes=None) -> None:
    """index.json and report.json from the finished shards. `notes` (a dataset's; None for SynthFER-3D): what the
    reader skipped, to which each frame left out of a sequence is added."""
    entries, bad = [], []
    for k in range(num_shards):
        meta = json.loads(_shard_paths(folder, k)[1].read_text())
        entries += meta["entries"]
        bad += meta["bad"]
    ids = {name: i for i, name in enumerate(labels)}
    for e in entries:
        e["label_id"] = ids[e["label"]]
    (folder / "index.json").write_text(json.dumps({"labels": labels, "entries": entries}) + "\n")
    report = {"rendered": len(entries), "bad": bad}
    if notes is not None:
        report["notes"] = list(notes) + [n for e in entries for n in e.get("notes", ())]
    if counted:
        report["counts"] = _counts(entries)
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
