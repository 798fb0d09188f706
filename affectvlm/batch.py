"""Score many scans at once: a folder or a zip of scan files in, one row per scan out, as a CSV table.

    predictor = AffectVLMPredictor.from_pretrained()
    rows = score_batch(predictor, "scans/")             # or "scans.zip"; labels= as for the predictor
    write_csv(rows, "scores.csv")

Each scan is scored alone, exactly as `predictor(scan=path, labels=labels)` would score it. A scan that cannot be
scored gets a row with its error instead of stopping the batch; a source that cannot be used at all (no scans,
more than `InputLimits.max_zip_entries` of them, a zip over the caps) raises `InputError`. Zips are extracted by
`affectvlm.scan.archive.extract_frames`, under the same caps as a 4D sequence (entries, sizes, ratio), into a
temporary folder; file names in rows and messages are relative to the source, never server paths.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .predictor import InputLimits
from .scan.archive import extract_frames, frame_order
from .scan.io import SUPPORTED_EXTENSIONS
from .scan.types import InputError

__all__ = ["FIXED_COLUMNS", "iter_scan_files", "label_columns", "score_batch", "write_csv"]

FIXED_COLUMNS = ("file", "label", "notes", "error")  # the label columns go between "label" and "notes"
DECIMALS = 4


def _is_scan(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_EXTENSIONS


def _without_stray_text(paths: list[Path]) -> list[Path]:
    """As `collect_frames`: .txt files (READMEs, landmark lists) count as scans only when nothing else is there."""
    real = [p for p in paths if p.suffix.lower() != ".txt"]
    return real or paths


def _too_many(name: str, cap: int) -> InputError:
    return InputError(f"{name}: more than {cap} scans (the limit); score at most {cap} at a time")


def _folder_scans(folder: Path, cap: int) -> list[Path]:
    """The scan files anywhere under `folder` (symlinked folders are not followed), refused past `cap`."""
    found: list[Path] = []
    texts: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
        for name in filter(_is_scan, files):
            (texts if name.lower().endswith(".txt") else found).append(Path(root) / name)
        if len(found) > cap:  # stop walking a huge tree as soon as the answer is known
            raise _too_many(folder.name, cap)
    return _without_stray_text(found + texts)


def _zip_scans(path: Path, limits: InputLimits, workdir: Path) -> list[Path]:
    """The scan files of a zip, extracted into `workdir` under the caps (entries, bytes, compression ratio)."""
    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    if path.stat().st_size > limits.max_zip_bytes:
        raise InputError(f"{path.name}: {path.stat().st_size / 1024**2:.0f} MB is more than the limit")
    return _without_stray_text(extract_frames(path, workdir, limits.zip_limits()))


def iter_scan_files(source, limits: InputLimits | None = None, workdir=None) -> Iterator[Path]:
    """The scan files in `source` (a folder, searched recursively, or a .zip, extracted into `workdir`), sorted
    in natural order of their path relative to the source.

    Files whose extension is not a scan format (`SUPPORTED_EXTENSIONS`) are skipped, as are hidden files and
    `__MACOSX` folders; `.txt` point clouds are taken only when there is no other scan. Raises `InputError`
    before yielding anything when there is no scan, more than `limits.max_zip_entries`, or the zip is refused.
    """
    limits = limits or InputLimits()
    source = Path(source)
    if source.is_dir():
        root, scans = source, _folder_scans(source, limits.max_zip_entries)
    elif source.suffix.lower() == ".zip":
        if workdir is None:
            raise TypeError("iter_scan_files: a zip needs a workdir to be extracted into")
        root, scans = Path(workdir), _zip_scans(source, limits, Path(workdir))
    elif source.exists():
        raise InputError(f"{source.name}: give a folder or a .zip file of scans")
    else:
        raise InputError(f"{source.name}: no such folder or file")
    if not scans:
        raise InputError(
            f"{source.name}: no scan files found (expected files ending in {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    if len(scans) > limits.max_zip_entries:
        raise _too_many(source.name, limits.max_zip_entries)
    relative = {p: p.relative_to(root).as_posix() for p in scans}
    yield from sorted(scans, key=lambda p: (frame_order(relative[p]), relative[p]))


def label_columns(predictor, labels=None) -> list[str]:
    """The label names `labels` give (as the predictor reads them), checked not to clash with the fixed columns."""
    names, _ = predictor.class_embeddings(labels)  # also computes (and caches) the text side once
    clash = [n for n in names if n in FIXED_COLUMNS]
    if clash:
        raise InputError(f"a label may not be called {clash[0]!r}: it is one of the table's own columns")
    return names


def _hide_folders(text: str, folders: list[Path]) -> str:
    """`text` with the absolute paths of `folders` cut off (a belt to the braces: messages should name files only)."""
    for folder in folders:
        for form in {str(folder.resolve()), str(folder) if folder.is_absolute() else ""}:
            if len(form.rstrip(os.sep)) > 1:
                text = text.replace(form.rstrip(os.sep) + os.sep, "").replace(form, "")
    return text


def _score_one(predictor, path: Path, name: str, names: list[str], labels, folders: list[Path], facing: str) -> dict:
    try:
        result = predictor(scan=path, labels=labels, facing=facing)
    except InputError as err:
        error = _hide_folders(str(err), folders) or type(err).__name__
        return {"file": name, "label": "", **dict.fromkeys(names, ""), "notes": "", "error": error}
    scores = result.scores()
    return {
        "file": name,
        "label": result.label,
        **{n: round(scores[n], DECIMALS) for n in names},
        "notes": _hide_folders("; ".join(result.notes), folders),
        "error": "",
    }


def score_batch(
    predictor,
    source,
    labels=None,
    progress: Callable[[int, int, str], object] | None = None,
    facing: str = "auto",
) -> list[dict]:
    """One row per scan in `source` (a folder or a .zip of scans), in `iter_scan_files` order; `facing`: which way
    every scan's face looks, as the predictor takes it (one scanner's files share their axes).

    Row: `file` (its path relative to the source; a zip's scans are extracted flat, so just their name), `label`
    (the top label), one column per label (its probability, 4 decimals), `notes` ("; "-joined) and `error`
    (empty, or why the scan could not be scored; its label and score cells are then empty). The predictor's
    `limits` cap the source; `progress(i, n, file)` is called after scan i of n (1-based) is done.
    """
    names = label_columns(predictor, labels)
    predictor.recipe_facing(facing)  # a facing it does not know is refused once, not on every row
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="affectvlm-batch-") as tmp:
        workdir = Path(tmp)
        files = list(iter_scan_files(source, predictor.limits, workdir))
        root = source if source.is_dir() else workdir
        folders = [workdir, source if source.is_dir() else source.parent]
        rows = []
        for i, path in enumerate(files, 1):
            name = path.relative_to(root).as_posix()
            rows.append(_score_one(predictor, path, name, names, labels, folders, facing))
            if progress is not None:
                progress(i, len(files), name)
    return rows


def write_csv(rows: list[dict], path_or_file) -> None:
    """Write `score_batch` rows as CSV (UTF-8): file, label, the label columns in the labels' order, notes, error.

    `path_or_file`: a path, or an open text file (opened with newline="")."""
    labels = [key for key in (rows[0] if rows else {}) if key not in FIXED_COLUMNS]
    columns = ["file", "label", *labels, "notes", "error"]
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", newline="", encoding="utf-8") as fh:
            _write(rows, columns, fh)
    else:
        _write(rows, columns, path_or_file)


def _write(rows: list[dict], columns: list[str], fh) -> None:
    writer = csv.DictWriter(fh, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
