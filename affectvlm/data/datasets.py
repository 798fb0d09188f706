"""Readers for the real 3D/4D expression datasets: BU-3DFE, Bosphorus, BU-4DFE, BP4D-Spontaneous.

Each reader turns a root folder into a list of :class:`Sample` (file path(s), subject id, label, intensity,
metadata) from the path layout alone, without opening a mesh: loading is the scan pipeline's job
(:func:`affectvlm.scan.load_scan`). Files and folders that do not belong (viewer folders, landmarks,
textures, photos) are skipped; files that look like they belong but are malformed are reported, never silently
dropped: :class:`DatasetError` when nothing usable is found or ``strict=True``, else a ``logging`` warning
listing them (also kept in ``read_dataset(...).issues``). Names that differ only in case (``.WRL`` beside
``.wrl``) are one sample, or one frame: the first in sorted order is read, the others are issues.

Layouts (``docs/data.md``, ``../shared/notes/datasets.md``)::

    BU-3DFE    <root>/F0001/F0001_AN01WH_F3D.wrl               6 expressions x 4 intensities + neutral
    Bosphorus  <root>/bs000/bs000_E_ANGER_0.bnt                 E (emotion), N (neutral), AU, pose, occlusion
    BU-4DFE    <root>/F001/Angry/000.wrl ...                    one frame per file, 25 fps
    BP4D       <root>/F001/T1/0000.obj ... (or .wrl)            8 tasks; 3D layout unverified

Protocol selectors (:func:`select_protocol`): ``bu3dfe-subset1``, ``bu3dfe-subset2``, ``bosphorus-six``,
``bu4dfe-six``, ``bp4d-tasks``; :func:`cross_dataset` for BU-4DFE -> BP4D.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .synth import EMOTIONS

__all__ = [
    "BP4D_TASKS",
    "DATASETS",
    "DatasetError",
    "DatasetIndex",
    "PROTOCOLS",
    "Sample",
    "cross_dataset",
    "read_bosphorus",
    "read_bp4d",
    "read_bu3dfe",
    "read_bu4dfe",
    "read_dataset",
    "select_protocol",
]

logger = logging.getLogger(__name__)

BU3DFE_EXPRESSIONS = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness", "SU": "surprise", "NE": "neutral"}
BU3DFE_ETHNICITY = {"WH": "White", "AE": "East Asian", "BL": "Black", "LA": "Latino/Hispanic", "IN": "Indian", "AM": "Middle-East Asian"}
BU4DFE_EXPRESSIONS = {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness", "Sad": "sadness", "Surprise": "surprise"}
BOSPHORUS_EMOTIONS = {"ANGER": "anger", "DISGUST": "disgust", "FEAR": "fear", "HAPPY": "happiness", "SADNESS": "sadness", "SURPRISE": "surprise"}
# BP4D task -> the emotion it elicits (unverified in the notes: pass your own map to read_bp4d)
BP4D_TASKS = {
    "T1": "happiness", "T2": "sadness", "T3": "surprise", "T4": "embarrassment",
    "T5": "fear", "T6": "pain", "T7": "anger", "T8": "disgust",
}  # fmt: skip

_BU3DFE_NAME = re.compile(
    r"^(?P<id>[FM]\d{4})_(?P<ex>[A-Z]{2})(?P<nn>\d{2})(?P<rr>[A-Z]{2})_(?P<kind>[A-Z0-9]+)\.(?P<ext>[A-Za-z]+)$"
)
_BOSPHORUS_NAME = re.compile(r"^(?P<id>bs\d{3})_(?P<group>[A-Z]+)_(?P<code>[A-Z0-9]+)_(?P<k>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
_FRAME_NAME = re.compile(r"^(?P<n>\d+)\.(?P<ext>[A-Za-z]+)$")


class DatasetError(ValueError):
    """A dataset root that cannot be used: missing, empty or malformed, with what and where."""


@dataclass(frozen=True)
class Sample:
    """One sample of a dataset.

    Attributes:
        paths: the scan file, or a 4D sequence's frame files in frame order.
        subject: subject id as the dataset writes it (``F0001``, ``bs000``, ``F001``).
        label: ``anger disgust fear happiness sadness surprise``, ``neutral``, or another dataset-specific
            label (a Bosphorus AU/pose code like ``LFAU_12``, a BP4D task's mapped emotion like ``pain``).
        intensity: 1-4 for BU-3DFE expressions, 0 for neutral, None where the dataset has none.
        dataset: ``bu3dfe``, ``bosphorus``, ``bu4dfe``, ``bp4d`` or ``synth``.
        metadata: gender (from the BU id prefix), ethnicity, task, expression code, number of frames, ...
    """

    paths: tuple[str, ...]
    subject: str
    label: str
    intensity: int | None = None
    dataset: str = ""
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def path(self) -> str:
        return self.paths[0]

    @property
    def is_sequence(self) -> bool:
        return len(self.paths) > 1 or self.dataset in ("bu4dfe", "bp4d")

    @property
    def key(self) -> str:
        """A stable id for the sample (unique within a dataset): dataset/subject/label/intensity/file."""
        name = Path(self.paths[0]).parent.name if self.is_sequence else Path(self.paths[0]).stem
        return f"{self.dataset}/{self.subject}/{name}"

    def to_dict(self) -> dict:
        return {
            "paths": list(self.paths), "subject": self.subject, "label": self.label,
            "intensity": self.intensity, "dataset": self.dataset, "metadata": self.metadata,
        }  # fmt: skip


class DatasetIndex(list):
    """A list of :class:`Sample` that also carries ``issues``: the malformed entries that were skipped."""

    def __init__(self, samples=(), issues=()):
        super().__init__(samples)
        self.issues: list[str] = list(issues)


def _check_root(root, name: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{name} root {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{name} root {root} is not a folder")
    return root


def _unique(samples: list[Sample], issues: list[str]) -> list[Sample]:
    """One sample per key: files whose names differ only in case (``F0001_AN01WH_F3D.WRL`` beside ``.wrl``, a copy
    from a case-insensitive disk) are one scan. The first in sorted path order is kept; each other is an issue."""
    kept: dict[str, Sample] = {}
    for s in sorted(samples, key=lambda s: s.paths):
        first = kept.setdefault(s.key.casefold(), s)
        if first is not s:
            issues.append(f"{s.path}: duplicate of {first.path} (the same sample's name in another case); read that one only")
    return list(kept.values())


def _finish(samples: list[Sample], issues: list[str], name: str, root: Path, expected: str, strict: bool) -> DatasetIndex:
    samples = _unique(samples, issues)
    if issues and strict:
        raise DatasetError(f"{name} under {root}: {len(issues)} malformed entries:\n  " + "\n  ".join(issues))
    if not samples:
        found = sorted(p.name for p in root.iterdir())[:10]
        detail = ("\n  " + "\n  ".join(issues[:20])) if issues else ""
        raise DatasetError(
            f"no {name} samples under {root}: expected {expected}; the folder holds {found or 'nothing'}{detail}"
        )
    if issues:
        logger.warning("%s: skipped %d malformed entries under %s:\n  %s", name, len(issues), root, "\n  ".join(issues[:20]))
    return DatasetIndex(sorted(samples, key=lambda s: (s.subject, s.label, s.intensity or 0, s.paths)), issues)


def _subject_dirs(root: Path, pattern: str) -> tuple[list[Path], list[Path]]:
    """Folders whose names match `pattern`, and the other entries (skipped: viewers, archives, readmes)."""
    rx = re.compile(pattern)
    subjects, other = [], []
    for p in sorted(root.iterdir()):
        (subjects if p.is_dir() and rx.match(p.name) else other).append(p)
    return subjects, other


def _gender(subject: str) -> str | None:
    return {"F": "female", "M": "male"}.get(subject[:1])


def read_bu3dfe(root, kind: str = "F3D", ext: str = ".wrl", strict: bool = False) -> DatasetIndex:
    """BU-3DFE: ``<root>/<ID>/<ID>_<EX><NN><RR>_<KIND>.<ext>``.

    Args:
        root: the dataset folder (holding ``F0001/`` ...).
        kind: ``F3D`` (cropped textured mesh, default) or ``RAW`` (uncropped scan).
        ext: the scan extension (``.wrl``).
        strict: raise on any malformed entry instead of skipping it with a warning.

    Returns:
        One :class:`Sample` per scan: label an emotion or ``neutral``, intensity 1-4 (0 neutral), metadata
        gender (ID prefix), ethnicity code and name, expression code.
    """
    root = _check_root(root, "BU-3DFE")
    subjects, _ = _subject_dirs(root, r"^[FM]\d{4}$")
    samples, issues = [], []
    ethnicity_of: dict[str, str] = {}
    for folder in subjects:
        found = 0
        for p in sorted(folder.iterdir()):
            m = _BU3DFE_NAME.match(p.name)
            if p.suffix.lower() != ext:
                continue  # textures (.bmp), landmarks (.bnd), photos (F2D.bmp), poses (.pse): not scans
            if m is None:
                issues.append(f"{p}: name does not follow <ID>_<EX><NN><RR>_<KIND>{ext}")
                continue
            if m["kind"] != kind:
                continue
            g = m.groupdict()
            problem = None
            if g["id"] != folder.name:
                problem = f"subject {g['id']} in folder {folder.name}"
            elif g["ex"] not in BU3DFE_EXPRESSIONS:
                problem = f"unknown expression code {g['ex']!r} (expected one of {sorted(BU3DFE_EXPRESSIONS)})"
            elif g["rr"] not in BU3DFE_ETHNICITY:
                problem = f"unknown ethnicity code {g['rr']!r} (expected one of {sorted(BU3DFE_ETHNICITY)})"
            elif (g["ex"] == "NE") != (g["nn"] == "00") or int(g["nn"]) > 4:
                problem = f"intensity {g['nn']} does not fit expression {g['ex']} (00 for NE, 01-04 otherwise)"
            elif ethnicity_of.setdefault(g["id"], g["rr"]) != g["rr"]:
                problem = f"ethnicity {g['rr']} differs from {ethnicity_of[g['id']]} in other files of {g['id']}"
            if problem:
                issues.append(f"{p}: {problem}")
                continue
            found += 1
            samples.append(
                Sample(
                    paths=(str(p),), subject=g["id"], label=BU3DFE_EXPRESSIONS[g["ex"]], intensity=int(g["nn"]),
                    dataset="bu3dfe",
                    metadata={
                        "gender": _gender(g["id"]), "ethnicity": g["rr"], "ethnicity_name": BU3DFE_ETHNICITY[g["rr"]],
                        "expression_code": g["ex"],
                    },
                )  # fmt: skip
            )
        if not found:
            issues.append(f"{folder}: no *_{kind}{ext} scans in this subject folder")
    return _finish(samples, issues, "BU-3DFE", root, f"subject folders F0001/ .. holding F0001_AN01WH_{kind}{ext}", strict)


def read_bosphorus(root, ext: str = ".bnt", strict: bool = False) -> DatasetIndex:
    """Bosphorus: ``<root>/bsNNN/bsNNN_<group>_<code>_<k>.bnt``.

    Returns:
        One :class:`Sample` per scan. Label: the emotion for group ``E``, ``neutral`` for ``N_N``, else
        ``<group>_<code>`` (action units, rotations, occlusions; :func:`select_protocol` filters them out).
        Metadata: group, code, take; gender is not in the file names.
    """
    root = _check_root(root, "Bosphorus")
    subjects, _ = _subject_dirs(root, r"^bs\d{3}$")
    samples, issues = [], []
    for folder in subjects:
        found = 0
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() != ext:
                continue  # .png textures, .lm2/.lm3 landmarks
            m = _BOSPHORUS_NAME.match(p.name)
            if m is None:
                issues.append(f"{p}: name does not follow bsNNN_<group>_<code>_<k>{ext}")
                continue
            g = m.groupdict()
            if g["id"] != folder.name:
                issues.append(f"{p}: subject {g['id']} in folder {folder.name}")
                continue
            if g["group"] == "E":
                if g["code"] not in BOSPHORUS_EMOTIONS:
                    issues.append(f"{p}: unknown emotion {g['code']!r} (expected one of {sorted(BOSPHORUS_EMOTIONS)})")
                    continue
                label = BOSPHORUS_EMOTIONS[g["code"]]
            elif g["group"] == "N":
                label = "neutral"
            else:
                label = f"{g['group']}_{g['code']}"
            found += 1
            samples.append(
                Sample(
                    paths=(str(p),), subject=g["id"], label=label, intensity=None, dataset="bosphorus",
                    metadata={"group": g["group"], "code": g["code"], "take": int(g["k"])},
                )  # fmt: skip
            )
        if not found:
            issues.append(f"{folder}: no bsNNN_*{ext} scans in this subject folder")
    return _finish(samples, issues, "Bosphorus", root, f"subject folders bs000/ .. holding bs000_E_ANGER_0{ext}", strict)


def _frames(folder: Path, exts: tuple[str, ...], issues: list[str]) -> list[Path]:
    """The numbered frame files of a sequence folder, in numeric order (gaps are reported)."""
    frames = []
    for p in folder.iterdir():
        if p.suffix.lower() not in exts:
            continue  # textures (.jpg/.bmp/.png), .mtl, landmarks
        m = _FRAME_NAME.match(p.name)
        if m is None:
            issues.append(f"{p}: frame file name is not a number")
            continue
        frames.append((int(m["n"]), p))
    kept: list[tuple[int, Path]] = []
    for n, p in sorted(frames):
        if kept and kept[-1][0] == n:  # 007.wrl beside 007.WRL or 7.wrl: one frame
            issues.append(f"{p}: duplicate of frame {kept[-1][1].name} (the same frame number); read that one only")
        else:
            kept.append((n, p))
    frames = kept
    numbers = [n for n, _ in frames]
    if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        issues.append(f"{folder}: frames {missing[:10]} missing from the numbering (kept the others)")
    return [p for _, p in frames]


def read_bu4dfe(root, ext: str = ".wrl", min_frames: int = 2, strict: bool = False) -> DatasetIndex:
    """BU-4DFE: ``<root>/<ID>/<Expr>/<NNN>.wrl``, one sequence per subject and expression.

    The viewer folder (``BU_WrlViewer_V2/``) and anything else that is not a subject folder are skipped.

    Returns:
        One :class:`Sample` per sequence, ``paths`` = its frame files in frame order (counted, not assumed to
        be 100); metadata gender, expression folder name, number of frames.
    """
    root = _check_root(root, "BU-4DFE")
    subjects, _ = _subject_dirs(root, r"^[FM]\d{3}$")
    samples, issues = [], []
    for folder in subjects:
        for seq in sorted(p for p in folder.iterdir() if p.is_dir()):
            if seq.name not in BU4DFE_EXPRESSIONS:
                issues.append(f"{seq}: unknown expression folder (expected one of {sorted(BU4DFE_EXPRESSIONS)})")
                continue
            frames = _frames(seq, (ext,), issues)
            if len(frames) < min_frames:
                issues.append(f"{seq}: {len(frames)} frame files *{ext} (need at least {min_frames})")
                continue
            samples.append(
                Sample(
                    paths=tuple(str(p) for p in frames), subject=folder.name, label=BU4DFE_EXPRESSIONS[seq.name],
                    dataset="bu4dfe",
                    metadata={"gender": _gender(folder.name), "expression_folder": seq.name, "num_frames": len(frames)},
                )  # fmt: skip
            )
    return _finish(samples, issues, "BU-4DFE", root, f"F001/Angry/000{ext} ...", strict)


def read_bp4d(
    root, task_map: dict[str, str] | None = None, exts: tuple[str, ...] = (".obj", ".wrl"), min_frames: int = 2, strict: bool = False
) -> DatasetIndex:
    """BP4D-Spontaneous: ``<root>/<ID>/<Task>/<frame>.<ext>``, one sequence per subject and task.

    The 3D layout is unverified: frames are the numbered files with one of `exts` directly in the task folder.

    Args:
        task_map: task -> label (default :data:`BP4D_TASKS`); tasks not in it are skipped.

    Returns:
        One :class:`Sample` per sequence with the mapped label; metadata gender, task, number of frames.
    """
    root = _check_root(root, "BP4D")
    task_map = BP4D_TASKS if task_map is None else task_map
    subjects, _ = _subject_dirs(root, r"^[FM]\d{3}$")
    samples, issues = [], []
    for folder in subjects:
        for task in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not re.fullmatch(r"T\d+", task.name):
                issues.append(f"{task}: not a task folder (T1 .. T8)")
                continue
            if task.name not in task_map:
                continue
            frames = _frames(task, tuple(e.lower() for e in exts), issues)
            if len(frames) < min_frames:
                issues.append(f"{task}: {len(frames)} 3D frame files ({', '.join(exts)}); only 2D images?")
                continue
            samples.append(
                Sample(
                    paths=tuple(str(p) for p in frames), subject=folder.name, label=task_map[task.name], dataset="bp4d",
                    metadata={"gender": _gender(folder.name), "task": task.name, "num_frames": len(frames)},
                )  # fmt: skip
            )
    return _finish(samples, issues, "BP4D", root, "F001/T1/0000.obj ...", strict)


DATASETS = {"bu3dfe": read_bu3dfe, "bosphorus": read_bosphorus, "bu4dfe": read_bu4dfe, "bp4d": read_bp4d}


def read_dataset(name: str, root, **kwargs) -> DatasetIndex:
    """Read dataset `name` (``bu3dfe``, ``bosphorus``, ``bu4dfe``, ``bp4d``) from `root`; kwargs go to its reader.

    A SynthFER-3D tree written by :func:`affectvlm.data.synth.write_synth_tree` is read with the reader of the
    layout it imitates (``bu3dfe``, ``bu4dfe``, ``bosphorus``, ``bp4d``).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[key](root, **kwargs)


# --- protocols --------------------------------------------------------------------------------------------


def _pick_subjects(subjects, num: int | None, seed: int | None) -> set[str]:
    subjects = sorted(set(subjects))
    if num is None or num >= len(subjects):
        if num is not None and num > len(subjects):
            raise DatasetError(f"the protocol needs {num} subjects; the dataset has {len(subjects)}")
        return set(subjects)
    if seed is None:
        return set(subjects[:num])
    order = np.random.default_rng(seed).permutation(len(subjects))
    return {subjects[i] for i in order[:num]}


def select_protocol(
    samples: list[Sample],
    protocol: str,
    *,
    num_subjects: int | None = None,
    subjects=None,
    intensities=None,
    labels=None,
    seed: int | None = 0,
    require_all: bool = True,
) -> list[Sample]:
    """The samples of a published protocol; every choice is a keyword so that variants stay one call away.

    Args:
        samples: from the matching reader.
        protocol: ``bu3dfe-subset1`` (60 subjects x 6 expressions x intensities 3-4 = 720 scans),
            ``bu3dfe-subset2`` (all four intensities, all subjects unless `num_subjects`),
            ``bosphorus-six`` (the six-emotion scans, subjects having all six when `require_all`),
            ``bu4dfe-six`` (the six expressions), ``bp4d-tasks`` (tasks whose mapped label is in `labels`,
            default the six emotions).
        num_subjects: subjects to keep (Subset I default 60); drawn with `seed` (None: the first in sorted
            order). Log them: the literature does not publish its list.
        subjects: an explicit subject list instead (overrides `num_subjects`).
        intensities: BU-3DFE intensities to keep (Subset I default (3, 4), Subset II (1, 2, 3, 4)).
        labels: labels to keep (default the six emotions).

    Returns:
        The selected samples, in the input order.
    """
    labels = set(EMOTIONS if labels is None else labels)
    protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise DatasetError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    want = PROTOCOLS[protocol]
    datasets = {s.dataset for s in samples}
    if samples and datasets - {want, "synth"}:
        raise DatasetError(f"protocol {protocol} is for {want} samples, got {sorted(datasets)}")
    if protocol.startswith("bu3dfe"):
        default_levels, default_num = ((3, 4), 60) if protocol == "bu3dfe-subset1" else ((1, 2, 3, 4), None)
        levels = set(default_levels if intensities is None else intensities)
        chosen = [s for s in samples if s.label in labels and s.intensity in levels]
        num_subjects = default_num if num_subjects is None else num_subjects
    else:
        chosen = [s for s in samples if s.label in labels]
        if protocol == "bosphorus-six" and require_all:
            have: dict[str, set] = {}
            for s in chosen:
                have.setdefault(s.subject, set()).add(s.label)
            chosen = [s for s in chosen if have[s.subject] >= labels]
    if subjects is not None:
        keep = set(subjects)
        if missing := keep - {s.subject for s in chosen}:
            raise DatasetError(f"subjects {sorted(missing)[:10]} have no {protocol} samples")
    else:
        keep = _pick_subjects((s.subject for s in chosen), num_subjects, seed)
    chosen = [s for s in chosen if s.subject in keep]
    if not chosen:
        raise DatasetError(f"protocol {protocol} selected nothing from {len(samples)} samples")
    return chosen


PROTOCOLS = {
    "bu3dfe-subset1": "bu3dfe",
    "bu3dfe-subset2": "bu3dfe",
    "bosphorus-six": "bosphorus",
    "bu4dfe-six": "bu4dfe",
    "bp4d-tasks": "bp4d",
}


def cross_dataset(
    bu4dfe: list[Sample], bp4d: list[Sample], test_tasks=("T1", "T8"), train_labels=None
) -> tuple[list[Sample], list[Sample]]:
    """BU-4DFE -> BP4D: train on BU-4DFE sequences, test on the BP4D tasks `test_tasks` (default T1 happy
    and T8 disgust, as in the literature) with their mapped labels.

    Args:
        train_labels: BU-4DFE labels to train on (default: the six expressions; pass the test labels to
            train on the same classes only).

    Returns:
        (train, test) sample lists.
    """
    test = [s for s in bp4d if s.metadata.get("task") in set(test_tasks)]
    if not test:
        raise DatasetError(f"no BP4D samples for tasks {list(test_tasks)}")
    train = select_protocol(bu4dfe, "bu4dfe-six", labels=train_labels)
    unknown = {s.label for s in test} - {s.label for s in train}
    if unknown:
        raise DatasetError(f"BP4D test labels {sorted(unknown)} are not among the BU-4DFE training labels")
    return train, test


def dataset_root_help(name: str) -> str:
    """One line on the expected layout of dataset `name`, for error messages and --help."""
    return {
        "bu3dfe": "<root>/F0001/F0001_AN01WH_F3D.wrl",
        "bosphorus": "<root>/bs000/bs000_E_ANGER_0.bnt",
        "bu4dfe": "<root>/F001/Angry/000.wrl",
        "bp4d": "<root>/F001/T1/0000.obj",
    }.get(name, "")
