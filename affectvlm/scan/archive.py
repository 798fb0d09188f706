"""4D sequences from a zip file: frames (and their textures) extracted safely, then sorted in time order.

Everything about an upload is checked before it is trusted: the declared sizes and entry count before anything
is read, then every entry is streamed in chunks and counted as it is written, so a zip bomb (sizes that lie, or
a huge compression ratio) stops at the cap instead of after filling memory or disk. Only base names are used:
no path from the archive reaches the file system.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .io import SUPPORTED_EXTENSIONS
from .types import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ZipLimits",
    "collect_frames",
    "extract_frames",
    "frame_files",
    "frame_order",
    "refuse_archives",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    """Caps on one uploaded zip: entries, bytes per entry and in all, and the compression ratio."""

    max_entries: int = 2_000
    max_entry_bytes: int = 100 * 1024**2
    max_total_bytes: int = 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed: meshes compress ~3-10x, bombs 1000x
    max_listed: int = 20_000  # entries of any kind: the zip's listing is read into memory whole


def frame_order(name: str):
    """Natural sort key: frame2 before frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def collect_frames(folder: Path) -> list[Path]:
    """The scan files directly inside `folder`, in natural order (000, 001, ..., 010): `frame_files`."""
    return frame_files(p for p in Path(folder).iterdir() if p.is_file())


def frame_files(paths) -> list[Path]:
    """The frames among `paths` (a folder's files, or files uploaded together), in natural order: scan files,
    without hidden ones (macOS's `._frame_000.ply` copies, as a zip's are left out), and without .txt files
    (READMEs, landmark lists: rarely frames) unless nothing else is there."""
    frames = [Path(p) for p in paths]
    frames = [p for p in frames if not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_EXTENSIONS]
    real = [p for p in frames if p.suffix.lower() != ".txt"]
    return sorted(real or frames, key=lambda p: frame_order(p.name))


def refuse_archives(paths) -> None:
    """Raise `InputError` when a zip is among frames given together (uploaded, or listed to the predictor): a zip is
    a sequence of its own (once it was left out without a word, and the other files scored as the whole
    sequence). A folder's listing leaves a zip in it out, as it does any file that is not a frame."""
    archive = next((Path(p) for p in paths if isinstance(p, str | Path) and Path(p).suffix.lower() == ".zip"), None)
    if archive is not None:
        raise InputError(f"{archive.name}: a zip holds a whole sequence; give it alone, not among other files")


def _listed_entries(path: Path) -> int:
    """The entry count a zip declares in its end record (zip64's where the classic field overflows), read before
    `zipfile` loads the whole listing; 0 when no end record is found (`zipfile` then says what is wrong)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) < end + 22:
        return 0
    count = struct.unpack_from("<H", tail, end + 10)[0]
    locator = end - 20  # zip64: a locator just before the end record names the zip64 end record
    if count == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        with open(path, "rb") as f:
            f.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
            record = f.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            count = struct.unpack_from("<Q", record, 32)[0]
    return count


def _wanted(info: zipfile.ZipInfo) -> bool:
    name = Path(info.filename).name
    ext = Path(name).suffix.lower()
    return (
        not info.is_dir()
        and not name.startswith(".")
        and "__MACOSX" not in info.filename
        and ext in (*SUPPORTED_EXTENSIONS, *IMAGE_EXTENSIONS, ".mtl")
    )


def _check_declared(infos: list[zipfile.ZipInfo], name: str, limits: ZipLimits) -> None:
    if len(infos) > limits.max_entries:
        raise InputError(f"{name}: {len(infos)} files is more than the limit of {limits.max_entries}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise InputError(f"{name}: {total / 1024**2:.0f} MB uncompressed is more than the limit")
    for info in infos:
        if info.file_size > limits.max_ratio * max(info.compress_size, 1) and info.file_size > _CHUNK:
            raise InputError(
                f"{name}: {Path(info.filename).name} is compressed too well to be a scan (a zip bomb?)"
            )


def _copy_capped(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: ZipLimits
):
    """Stream one entry to `target`, counting real bytes against the per-entry, total and ratio caps."""
    entry_cap = min(
        limits.max_entry_bytes, budget, int(limits.max_ratio * max(info.compress_size, 1)) + _CHUNK
    )
    written = 0
    with archive.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > entry_cap:
                raise InputError(
                    f"{Path(info.filename).name}: unpacks to more than its size allows (a zip bomb?)"
                )
            dst.write(chunk)
    return written


def extract_frames(path: Path, workdir: Path, limits: ZipLimits | None = None) -> list[Path]:
    """Extract the frames of a zip into `workdir` under the caps; the frame files in time (natural) order."""
    limits = limits or ZipLimits()
    name = Path(path).name
    listed = _listed_entries(path)
    if listed > limits.max_listed:
        raise InputError(f"{name}: {listed} entries is more than the limit of {limits.max_listed}")
    try:
        with zipfile.ZipFile(path) as archive:
            listing = [i.filename for i in archive.infolist()]
            infos = [i for i in archive.infolist() if _wanted(i)]
            _check_declared(infos, name, limits)
            names = [Path(i.filename).name for i in infos]
            if len(set(names)) != len(names):
                raise InputError(_shared_name(name, [i.filename for i in infos]))
            budget = limits.max_total_bytes
            for info, base in zip(infos, names):
                budget -= _copy_capped(archive, info, workdir / base, budget, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as err:
        raise InputError(f"{name}: not a valid zip file ({type(err).__name__})") from None
    except (OSError, RuntimeError) as err:  # encrypted entries, truncated files
        raise InputError(f"{name}: the zip cannot be read ({type(err).__name__})") from None
    frames = frame_files(workdir / n for n in names)
    if not frames and any(Path(i).suffix.lower() == ".zip" for i in listing):
        raise InputError(f"{name}: the frames are in a zip inside it; give that zip itself")
    return frames


def _shared_name(name: str, entries: list[str]) -> str:
    """Why the zip `name` cannot be unpacked flat: one entry listed twice, or one name in two folders."""
    if len(set(entries)) != len(entries):
        twice = next(e for e in entries if entries.count(e) > 1)
        return f"{name}: the zip lists {Path(twice).name} twice; make the zip again from the frames"
    return f"{name}: two files share a name in different folders; put one sequence per zip"
