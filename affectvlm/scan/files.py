"""Files and text as scan readers meet them: text of any encoding, numbers parsed under a cap, files beside a
scan confined to its folder, texture images checked from their header before they are decoded.

Shared by every reader (io, wrl, bnt, pcd); imports nothing from them.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .types import ScanError

__all__ = [
    "MAX_TEXTURE_PIXELS",
    "confined_file",
    "decode_text",
    "parse_numbers",
    "read_image",
    "rgb_uint8",
    "scrub",
    "texture_pixels",
]

logger = logging.getLogger(__name__)

MAX_TEXTURE_PIXELS = 4096 * 4096  # larger textures are ignored unread (the predictor's image cap too)
_PIECE = 1 << 22  # characters parsed per numpy call


def decode_text(data: bytes) -> str:
    """A text scan file's characters: UTF-8 when it is, else Latin-1 (any byte is a character)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# a URL scheme ("http:", "file:", "data:") or a Windows drive ("C:"): never a file beside the scan
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def confined_file(folder, name: str) -> Path | None:
    """The regular file that `name` (a reference written in a scan file) names inside `folder`, or None.

    References that could leave the folder are refused before the disk is touched: absolute paths,
    '..', anything with a URL scheme or drive letter; a symlink that resolves outside is refused too.
    A name that differs only in case is accepted (datasets copied from Windows disagree on case).
    """
    parts = name.strip().replace("\\", "/").split("/")
    if parts[0] == "" or "\0" in name or ".." in parts or _SCHEME.match(parts[0]):
        return None
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        return None
    root = Path(folder).resolve()
    candidate = root.joinpath(*parts)
    if not candidate.is_file() and candidate.parent.is_dir():
        lower = candidate.name.lower()
        candidate = next((e for e in candidate.parent.iterdir() if e.name.lower() == lower), candidate)
    real = candidate.resolve()
    return real if real.is_relative_to(root) and real.is_file() else None


def read_image(path) -> np.ndarray | None:
    """Read a texture image as (H, W, 3) uint8, or None with a warning naming the file: when it has more than
    MAX_TEXTURE_PIXELS pixels (the size comes from the header, before anything is decoded), and when it cannot
    be read or decoded (truncated, corrupt, not an image). An unreadable texture is a missing one: the scan's
    geometry is still read, and only a render in ``texture`` mode needs the image."""
    label = os.path.basename(os.fsdecode(path))
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:  # PIL's own check, at twice the cap
        logger.warning("ignoring texture %s: more than twice the cap of %d pixels", label, MAX_TEXTURE_PIXELS)
        return None
    except (OSError, SyntaxError, ValueError) as exc:
        logger.warning("ignoring texture %s: cannot read it (%s); reading the scan without it", label, scrub(str(exc)))
        return None
    with img:
        try:
            return texture_pixels(img, label)
        except ScanError as exc:
            logger.warning("ignoring texture %s: %s; reading the scan without it", label, exc)
            return None


def texture_pixels(img, label: str) -> np.ndarray | None:
    """An opened (not yet decoded) PIL image as (H, W, 3) uint8, or None when it is over the cap."""
    if img.width * img.height > MAX_TEXTURE_PIXELS:
        logger.warning(
            "ignoring texture %s: %d x %d pixels, more than the cap of %d",
            label,
            img.width,
            img.height,
            MAX_TEXTURE_PIXELS,
        )
        return None
    try:
        return np.array(img.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise ScanError(f"cannot decode texture image {label}: {scrub(str(exc))}") from None


# a folder inside an exception's text (up to the last separator), removed so that no server path shows
_FOLDER = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"]*)*[\\/]")


def scrub(text: str, limit: int = 200) -> str:
    text = _FOLDER.sub("", text[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# load_scan


def parse_numbers(text: str, what: str, limit: int, dtype=np.float64) -> np.ndarray:
    """All the numbers in `text` (separated by whitespace or commas), parsed in C piece by piece.

    Parsing stops as soon as more than `limit` numbers were seen, so a list longer than the cap is
    refused without holding much more than the cap in memory (a Python token list would take ~50
    bytes per number first).
    """
    pieces, total, pos, end = [], 0, 0, len(text)
    while pos < end:
        stop = min(end, pos + _PIECE)
        if stop < end:  # cut at whitespace or a comma, never inside a number
            stop = max(text.rfind(c, pos, stop) for c in " \n\t\r,")
            if stop <= pos:
                raise ScanError(f"corrupt {what}: a token longer than {_PIECE} characters")
        with warnings.catch_warnings():
            # numpy reports unparsable text as a DeprecationWarning in some versions, ValueError in others
            warnings.simplefilter("error", DeprecationWarning)
            try:
                part = np.fromstring(text[pos:stop].replace(",", " "), dtype=dtype, sep=" ")
            except (ValueError, DeprecationWarning):
                raise ScanError(f"corrupt number in {what}") from None
        total += len(part)
        if total > limit:
            raise ScanError(f"{what} has more than {limit} numbers, the cap")
        pieces.append(part)
        pos = stop + 1
    return np.concatenate(pieces) if len(pieces) > 1 else (pieces[0] if pieces else np.zeros(0, dtype))


def rgb_uint8(values: np.ndarray) -> np.ndarray:
    """(N, 3) colours as uint8 RGB: clipped to 0-255, and floats all within [0, 1] scaled to 0-255 first."""
    c = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0, 255)
    return (c * 255.0 if c.max(initial=0) <= 1.0 else c).round().astype(np.uint8)
