"""`load_scan`: read any supported scan file into a `Scan`, or fail with a `ScanError`.

Formats: VRML 2.0 `.wrl` and Bosphorus `.bnt` (own parsers); OBJ, PLY, STL, OFF, GLB/GLTF through
trimesh (after our own header checks, so that a header that lies about sizes fails before anything
is allocated); point clouds in PLY, `.xyz`/`.pts`/`.txt` (x y z [r g b] per line) and `.npy`
((N, 3) or (N, 6) with colours).

Hostile files: every failure is a `ScanError` that names the problem and the file's base name (never
its folder); text may hold any byte (UTF-8, else Latin-1); files beside the scan (textures, MTL, GLTF
buffers) are read only from the scan's own folder, and images only up to `MAX_TEXTURE_PIXELS`, checked
from their header before anything is decoded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .bnt import parse_bnt
from .files import (
    MAX_TEXTURE_PIXELS,
    confined_file,
    decode_text,
    parse_numbers,
    read_image,
    rgb_uint8,
    scrub,
    texture_pixels,
)
from .pcd import parse_pcd
from .ply import has_strips, ply_elements, read_binary_polygons, read_strips
from .types import Scan, ScanError, file_tag
from .wrl import parse_wrl

__all__ = [
    "load_scan",
    "read_image",
    "decode_text",
    "confined_file",
    "drop_nonfinite",
    "SUPPORTED_EXTENSIONS",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_TEXTURE_PIXELS",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB: a 2 M-vertex ASCII scan with texture coordinates is ~300 MB
_MAX_NONFINITE_FRACTION = 0.5  # drop NaN/Inf vertices when they are few, refuse the scan when they are most
_TRIMESH = {".obj", ".ply", ".stl", ".off", ".glb", ".gltf"}
_POINTS = {".xyz", ".pts", ".txt"}
_MAX_INSTANCES = 4096  # meshes placed in a GLB/GLTF scene: flattening copies each, ~0.3 ms apiece
SUPPORTED_EXTENSIONS = tuple(sorted({".wrl", ".vrml", ".bnt", ".npy", ".pcd", *_TRIMESH, *_POINTS}))

# PIL's own bomb check, lowered to the texture cap: Image.open refuses images of more than twice
# MAX_IMAGE_PIXELS, so trimesh (which opens textures itself) never holds a larger one, and ours are
# checked against MAX_TEXTURE_PIXELS before they are decoded.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_TEXTURE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_TEXTURE_PIXELS


# ---------------------------------------------------------------------------------------------
# text, files beside the scan, texture images


def _as_utf8(data: bytes) -> bytes:
    """Text bytes as UTF-8 for trimesh, whose decoder needs charset_normalizer for anything else."""
    return data if data.isascii() else decode_text(data).encode("utf-8")


def load_scan(
    path,
    *,
    max_vertices: int = 2_000_000,
    max_faces: int = 4_000_000,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    load_texture: bool = True,
) -> Scan:
    """Read a scan file.

    Args:
        path: a file with one of `SUPPORTED_EXTENSIONS`.
        max_vertices, max_faces: caps checked against the header (or token count) before arrays are
            allocated; the defaults fit real scanners (BU-4DFE ~35 k vertices, Artec ~1 M).
        max_file_bytes: files larger than this are refused before being read.
        load_texture: read the texture image that the scan refers to or embeds (ignored, with a
            warning, when it is larger than `MAX_TEXTURE_PIXELS` or outside the scan's folder).

    Returns:
        The Scan, with NaN/Inf vertices (and coordinates beyond float32) dropped, and the faces
        using them; a scan where most vertices are NaN/Inf is refused.

    Raises:
        ScanError: for every file that cannot be used, naming the problem and the file's base name.
    """
    path = os.fsdecode(path)
    name = os.path.basename(path)
    try:
        scan = _read(path, max_vertices, max_faces, max_file_bytes, load_texture)
        return _require_triangle_corners(drop_nonfinite(scan))
    except ScanError as exc:
        if name in str(exc):
            raise
        raise ScanError(f"{exc} ({name})") from None
    except Exception as exc:  # the readers, numpy, PIL and trimesh raise many types on malformed files
        logger.debug("cannot read %s", name, exc_info=True)
        raise ScanError(_failure_message(exc, Path(path).suffix, name)) from exc


# what an exception escaping a reader says about the file (the first match counts)
_FAILURES = (
    (RecursionError, "it is nested too deeply"),
    (MemoryError, "it needs more memory than is available"),
    ((zipfile.BadZipFile, zlib.error), "corrupt compressed data"),
    (UnicodeError, "text in an unknown encoding"),
    (json.JSONDecodeError, "corrupt JSON"),
    (struct.error, "truncated binary data"),
)


def _failure_message(exc: Exception, ext: str, name: str) -> str:
    what = next((text for kinds, text in _FAILURES if isinstance(exc, kinds)), "malformed file")
    detail = scrub(f"{type(exc).__name__}: {exc}")
    return f"cannot read {ext[1:].upper() or 'the'} file, {what} ({detail}) ({name})"


def _read(path: str, max_vertices: int, max_faces: int, max_file_bytes: int, load_texture: bool) -> Scan:
    """The reader for the file's extension, after the checks every file passes; messages leave out
    the file's name (load_scan adds it)."""
    ext = Path(path).suffix.lower()
    if ext == ".zip":
        raise ScanError(
            "a .zip holds files, not one scan: give the scan file itself, or the zip as a 4D sequence (sequence=, "
            "the app's 4D tab) or as scans to score one by one (the app's batch tab, the command line's --csv)"
        )
    if ext not in SUPPORTED_EXTENSIONS:
        raise ScanError(
            f"unknown scan extension {ext or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not os.path.isfile(path):
        raise ScanError("no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise ScanError("empty file")
    if size > max_file_bytes:
        raise ScanError(f"file of {size} bytes is larger than the cap of {max_file_bytes}")
    with open(path, "rb") as fh:
        data = fh.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:  # it grew since
        raise ScanError(f"file is larger than the cap of {max_file_bytes} bytes")
    data = _plain_text(data, ext)
    caps = {"max_vertices": max_vertices, "max_faces": max_faces}
    if ext in (".wrl", ".vrml"):
        scan = parse_wrl(data, path, load_texture=load_texture, **caps)
    elif ext == ".bnt":
        scan = parse_bnt(data, path, max_vertices=max_vertices, load_texture=load_texture)
    elif ext == ".npy":
        scan = _load_npy(data, max_vertices)
    elif ext == ".pcd":
        scan = parse_pcd(data, max_vertices=max_vertices)
    elif ext in _POINTS:
        scan = _load_points_text(data, max_vertices)
    else:
        resolver = _FolderResolver(path, max_file_bytes)
        scan = _load_mesh(data, ext, resolver, load_texture=load_texture, **caps)
    if scan.num_vertices > max_vertices:
        raise ScanError(f"{scan.num_vertices} vertices, more than the cap of {max_vertices}")
    if scan.num_faces > max_faces:
        raise ScanError(f"{scan.num_faces} faces, more than the cap of {max_faces}")
    scan.path = path
    return scan


_BOM = b"\xef\xbb\xbf"
_ALL_TEXT = {".obj", ".off", ".wrl", ".vrml", ".gltf", *_POINTS}  # formats with no binary part


def _plain_text(data: bytes, ext: str) -> bytes:
    """A text scan file in the conventions the readers take: without the UTF-8 byte-order mark that Windows
    editors write first, UTF-16 (with its mark, as Windows PowerShell's `>` writes text) as UTF-8, and (formats
    that are text throughout) with classic Mac line ends (CR alone) as LF. Binary files stay as they are."""
    if ext in (".npy", ".bnt", ".glb") or (ext == ".stl" and _binary_stl_count(data) is not None):
        return data
    if ext in _ALL_TEXT and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise ScanError("the file starts with a UTF-16 byte-order mark but is not UTF-16 text") from None
    data = data.removeprefix(_BOM)
    if ext in _ALL_TEXT and b"\n" not in data[: 1 << 16] and b"\r" in data[: 1 << 16]:
        data = data.replace(b"\r", b"\n")
    return data


def drop_nonfinite(scan: Scan) -> Scan:
    """Drop NaN/Inf vertices (and faces using them) when they are few; refuse the scan when most are."""
    where = file_tag(scan.path)
    if scan.num_vertices == 0:
        raise ScanError(f"no usable vertices: the scan has none{where}")
    if np.isfinite(scan.vertices).all():  # the common case, without a slow per-row reduction
        return scan
    finite = np.isfinite(scan.vertices).all(axis=1)
    bad = int((~finite).sum())
    if bad > _MAX_NONFINITE_FRACTION * len(finite):
        raise ScanError(f"{bad} of {len(finite)} vertices are NaN or Inf (or beyond float32){where}")
    logger.warning("dropping %d NaN/Inf vertices of %d%s", bad, len(finite), where)
    return scan.subset(finite)


def _require_triangle_corners(scan: Scan) -> Scan:
    """Refuse a mesh whose vertices are fewer than 3 distinct points (its triangles have no area,
    no normal): whether the rest looks like a face is for later checks to say."""
    if scan.is_point_cloud:
        return scan
    v = scan.vertices
    differ = (v != v[0]).any(axis=1)  # from the first point
    second = int(differ.argmax())
    if not differ[second] or not (differ & (v != v[second]).any(axis=1)).any():
        count = 1 + int(differ[second])
        raise ScanError(
            f"no usable vertices: only {count} distinct point(s), a triangle needs 3{file_tag(scan.path)}"
        )
    return scan


# ---------------------------------------------------------------------------------------------
# point clouds


def _load_npy(data: bytes, max_vertices: int) -> Scan:
    try:
        # read the header first: its shape must pass the cap before np.load allocates anything
        fh = io.BytesIO(data)
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fh)
    except ValueError as exc:
        raise ScanError(f"not a valid .npy file: {exc}") from None
    if len(shape) != 2 or shape[1] not in (3, 6):
        raise ScanError(f".npy point cloud must have shape (N, 3) or (N, 6), got {shape}")
    if shape[0] > max_vertices:
        raise ScanError(f"{shape[0]} points, more than the cap of {max_vertices}")
    if dtype.hasobject or dtype.kind not in "fiu":
        raise ScanError(f".npy point cloud must be numeric, got dtype {dtype}")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ScanError(f"truncated or corrupt .npy file: {exc}") from None
    return Scan(vertices=arr[:, :3], colors=_point_colors(arr))


def _load_points_text(data: bytes, max_vertices: int) -> Scan:
    # count lines in C before splitting: a list of lines costs ~50 bytes each
    if data.count(b"\n") > 2 * max_vertices + 1024:
        raise ScanError(f"point file has more lines than twice the cap of {max_vertices} points")
    # split at '\n' only, as counted above (splitlines also splits at Latin-1 bytes such as 0x85)
    lines = [
        ln for ln in decode_text(data).split("\n") if ln.strip() and not ln.lstrip().startswith(("#", "//"))
    ]
    lines, decimal_comma = _point_data_lines(lines)
    if decimal_comma:
        lines = [ln.replace(",", ".") for ln in lines]
    if not lines:
        raise ScanError("no vertices: the point file has no data lines")
    if len(lines) > max_vertices:
        raise ScanError(f"{len(lines)} points, more than the cap of {max_vertices}")
    if len(lines[0]) > 4096:
        raise ScanError("the first point line is longer than 4096 characters")
    ncols = len(lines[0].replace(",", " ").replace(";", " ").split())
    if ncols < 3:
        raise ScanError(f"point lines need at least 3 numbers (x y z), got {ncols}")
    what = f"point file of {len(lines)} lines with {ncols} columns"
    arr = parse_numbers("\n".join(lines).replace(";", " "), what, ncols * len(lines))
    if arr.size != ncols * len(lines):
        raise ScanError(f"point lines have different numbers of columns (first has {ncols})")
    arr = arr.reshape(len(lines), ncols)
    return Scan(vertices=arr[:, :3], colors=_point_colors(arr))


_DECIMAL_COMMA = re.compile(r"[-+]?\d+(,\d+)?([eE][-+]?\d+)?")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _point_data_lines(lines: list[str]) -> tuple[list[str], bool]:
    """The data lines of a point file, without a first line that holds the point count (Leica `.pts`) or the
    columns' names (`x y z`, `X,Y,Z`); and whether its numbers use decimal commas (`0,5;1,25;2,75` or
    `0,5 1,25 2,75`: a comma inside every field where fields are split by semicolons or spaces)."""
    if len(lines) > 1:
        fields = lines[0].replace(",", " ").replace(";", " ").split()
        if (len(fields) == 1 and fields[0].isdecimal()) or not any(map(_is_number, fields)):
            lines = lines[1:]
    fields = lines[0].replace(";", " ").split() if lines else []
    decimal_comma = (
        len(fields) >= 3
        and any("," in f for f in fields)
        and all(_DECIMAL_COMMA.fullmatch(f) for f in fields)
    )
    return lines, decimal_comma


def _point_colors(arr: np.ndarray) -> np.ndarray | None:
    """Columns 3:6 as uint8 RGB (floats in [0, 1] scaled to 0-255), or None without them."""
    return rgb_uint8(arr[:, 3:6]) if arr.shape[1] >= 6 else None


# ---------------------------------------------------------------------------------------------
# header checks for the formats trimesh reads: counts must pass the caps and fit in the file


def _check_ply_header(data: bytes, max_vertices: int, max_faces: int) -> int:
    """Check a PLY header against the caps and the file's size; returns where its body starts."""
    end = data.find(b"end_header", 0, 1 << 16)
    if not data.startswith(b"ply") or end < 0:
        raise ScanError("not a PLY file: no 'ply' magic or no 'end_header' in the first 64 KiB")
    fmt, elements = ply_elements(data[:end].decode("latin-1"))
    counts = {element.name: element.count for element in elements}
    if counts.get("vertex", 0) > max_vertices:
        raise ScanError(f"PLY header claims {counts['vertex']} vertices, more than the cap of {max_vertices}")
    if counts.get("face", 0) > max_faces:
        raise ScanError(f"PLY header claims {counts['face']} faces, more than the cap of {max_faces}")
    start = data.find(b"\n", end) + 1 or len(data)
    body = len(data) - start
    # every item takes at least its fixed-size bytes (binary) or two characters per property (ascii)
    need = sum(e.count * (e.min_item_bytes if fmt != "ascii" else 2) for e in elements)
    if need > body:
        raise ScanError(
            f"truncated PLY file: the header promises at least {need} bytes of data, {body} remain"
        )
    # trimesh makes an array of every ASCII line: no more lines than the header declares items
    items = sum(counts.values())
    if fmt == "ascii" and data.count(b"\n", start) > items + 1024:
        raise ScanError(f"ASCII PLY file has more lines than the {items} items its header declares")
    return start


def _off_text(data: bytes) -> bytes:
    """The OFF file with blank lines, comments and a BOM before its keyword removed, and the keyword on a line of
    its own: some writers glue the first count to it (`OFF8 6 12`), which trimesh's reader does not take."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        body = line.split(b"#", 1)[0].strip().removeprefix(b"\xef\xbb\xbf")
        if body:
            keyword = re.match(rb"([A-Z]*OFF)(.*)$", body, re.S)
            if keyword is None:
                break
            return b"\n".join([keyword.group(1), keyword.group(2), *lines[i + 1 :]])
    raise ScanError("not an OFF file: no 'OFF' keyword before its data")


def _check_off_header(data: bytes, max_vertices: int, max_faces: int) -> bytes:
    """Check an OFF file's counts against the caps and its size; returns the text for trimesh (`_off_text`)."""
    data = _off_text(data)
    tokens = re.sub(rb"#[^\n]*", b"", data[: 1 << 16]).split()
    try:
        nv, nf = int(tokens[1]), int(tokens[2])
    except (IndexError, ValueError):
        raise ScanError("corrupt OFF header: no vertex and face counts") from None
    if min(nv, nf) < 0:
        raise ScanError(f"corrupt OFF header: negative counts {nv} and {nf}")
    if nv > max_vertices or nf > max_faces:
        raise ScanError(f"OFF header claims {nv} vertices and {nf} faces, above the caps")
    if 6 * nv + 8 * nf > len(data):  # 'x y z\n' and '3 a b c\n' need at least that many characters
        raise ScanError(f"truncated OFF file: the header claims {nv} vertices and {nf} faces")
    # trimesh makes a string of every line: no more lines than the header declares records
    if data.count(b"\n") > 2 * (nv + nf) + 1024:
        raise ScanError(
            f"OFF file has far more lines than the {nv} vertices and {nf} faces its header declares"
        )
    return data


def _binary_stl_count(data: bytes) -> int | None:
    """The triangle count of a binary STL whose size matches it, else None."""
    if len(data) < 84:
        return None
    (count,) = struct.unpack_from("<I", data, 80)
    return count if 84 + 50 * count == len(data) else None


def _check_stl(data: bytes, max_faces: int) -> bool:
    """Check an STL's size against its triangle count; True for binary, False for ASCII (`data` lower case:
    `_ascii_stl`)."""
    ascii_start = data.lstrip()[:5] == b"solid"
    if len(data) < 84 and not ascii_start:
        raise ScanError(f"truncated STL file: {len(data)} bytes")
    count = _binary_stl_count(data)
    if count is not None:
        if count > max_faces:
            raise ScanError(f"STL has {count} triangles, more than the cap of {max_faces}")
        return True
    if not ascii_start:
        raise ScanError("truncated or corrupt binary STL: size does not match its triangle count")
    if data.count(b"facet normal") > max_faces:
        raise ScanError(f"{data.count(b'facet normal')} facet records, more than the cap of {max_faces}")
    return False


def _ascii_stl(data: bytes) -> bytes:
    """An ASCII STL in lower case, as trimesh reads it: some CAD exporters write the keywords in capitals
    (`SOLID`, `FACET NORMAL`, `VERTEX`); the rest of the file is numbers and the solid's name. Binary STL
    (its size matches its triangle count) stays as it is."""
    return data if _binary_stl_count(data) is not None else data.lower()


def _check_obj_counts(data: bytes, max_vertices: int, max_faces: int) -> None:
    """OBJ has no header: count its records in C before trimesh parses them (one string each)."""

    def records(key: bytes) -> int:
        return data.count(b"\n" + key + b" ") + data.count(b"\n" + key + b"\t") + data.startswith(key + b" ")

    corners = max(max_vertices, 3 * max_faces)  # at most one uv and one normal per face corner
    for key, what, cap in (
        (b"v", "vertex", max_vertices),
        (b"f", "face", max_faces),
        (b"vt", "texture coordinate", corners),
        (b"vn", "normal", corners),
    ):
        count = records(key)
        if count > cap:
            raise ScanError(f"{count} {what} records, more than the cap of {cap}")


def _check_gltf(data: bytes, max_vertices: int, binary: bool) -> None:
    """Check a GLB's chunk sizes and a GLB's or GLTF's accessor counts before trimesh reads them."""
    doc = data
    if binary:
        if len(data) < 20 or data[:4] != b"glTF":
            raise ScanError("not a GLB file: no 'glTF' magic")
        _, _, total = struct.unpack_from("<4sII", data, 0)
        json_len, json_type = struct.unpack_from("<II", data, 12)
        if total != len(data) or 20 + json_len > len(data) or json_type != 0x4E4F534A:
            raise ScanError("truncated or corrupt GLB file: header sizes do not match the file")
        doc = data[20 : 20 + json_len]
    doc = json.loads(doc)  # corrupt or deeply nested JSON: load_scan turns the error into a ScanError
    if not isinstance(doc, dict):
        raise ScanError("corrupt glTF: its JSON is not an object")
    for acc in doc.get("accessors", []):
        if int(acc.get("count", 0)) > 4 * max_vertices:
            raise ScanError(f"glTF accessor claims {acc['count']} items, above the caps")
    for view in doc.get("bufferViews", []) if binary else []:
        if int(view.get("byteOffset", 0)) + int(view.get("byteLength", 0)) > len(data):
            raise ScanError("truncated GLB file: a buffer view runs past the end")


# ---------------------------------------------------------------------------------------------
# the formats trimesh reads


class _FolderResolver:
    """What trimesh may read beside a scan (MTL, textures, GLTF buffers): `confined_file`s of the
    scan's folder (the name as written, else its last part, as trimesh's own resolver tries), up to
    `max_bytes` each; MTL text made UTF-8 like the OBJ's, so that material names still match."""

    def __init__(self, path: str, max_bytes: int):
        self.folder = Path(path).parent
        self.file_name = os.path.basename(path)  # trimesh names OBJ geometry after it
        self.max_bytes = max_bytes

    def get(self, name: str) -> bytes:
        last = re.split(r"[\\/]", name.strip())[-1]
        found = confined_file(self.folder, name) or confined_file(self.folder, last)
        if found is None or found.stat().st_size > self.max_bytes:
            raise FileNotFoundError(f"{last!r} is not a readable file in the scan's folder")
        data = found.read_bytes()
        return _as_utf8(data) if found.suffix.lower() == ".mtl" else data

    __getitem__ = get


def _load_mesh(data: bytes, ext: str, resolver: _FolderResolver, **kwargs) -> Scan:
    """`_load_trimesh`, or for a binary PLY that trimesh cannot read (its faces have different numbers of
    corners) `affectvlm.scan.ply.read_binary_polygons`, and for a PLY of triangle strips (which trimesh would read
    as a point cloud) `affectvlm.scan.ply.read_strips`."""
    if ext == ".ply":
        start = _check_ply_header(data, kwargs["max_vertices"], kwargs["max_faces"])
        fmt, elements = ply_elements(data[:start].decode("latin-1"))
        if has_strips(elements):
            return read_strips(data, start, fmt, elements, kwargs["max_faces"])
    try:
        return _load_trimesh(data, ext, resolver, **kwargs)
    except ScanError:
        raise
    except Exception:
        if ext != ".ply":
            raise
        start = _check_ply_header(data, kwargs["max_vertices"], kwargs["max_faces"])
        fmt, elements = ply_elements(data[:start].decode("latin-1"))
        if fmt == "ascii" or not any(e.name == "face" and e.has_lists for e in elements):
            raise
        return read_binary_polygons(data, start, fmt, elements, kwargs["max_faces"])


def _load_trimesh(
    data: bytes, ext: str, resolver: _FolderResolver, *, max_vertices: int, max_faces: int, load_texture: bool
) -> Scan:
    import trimesh

    data = _trimesh_input(data, ext, max_vertices, max_faces)
    with warnings.catch_warnings():
        # trimesh's texture code takes a NaN median of per-corner `vt` indices where a vertex has none (an OBJ
        # with loose vertices) and casts it: numpy warns ("All-NaN slice", "invalid value encountered in cast")
        # about what does not touch the geometry read
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"trimesh\.visual")
        loaded = trimesh.load(
            io.BytesIO(data),
            file_type=ext[1:],
            resolver=resolver,
            process=False,  # keep the file's vertex order and count (no merging, no removal)
            maintain_order=True,
            skip_materials=not load_texture,
        )
    kind, label = ext[1:].upper(), f"of {resolver.file_name}"
    if isinstance(loaded, trimesh.Scene):
        loaded = _scene_geometry(loaded, kind, label, max_vertices, max_faces)
    return _scan_from_trimesh(loaded, kind, label, load_texture)


_OBJ_RELATIVE = re.compile(rb"(?m)^[ \t]*f[ \t][^\n]*[ \t/]-[0-9]")  # a face line with a negative index
_OBJ_ZERO = re.compile(rb"(?m)^[ \t]*f[ \t](?:[^\n]*[ \t])?0(?=[/ \t\r\n]|$)")  # ... with a vertex index 0


def _trimesh_input(data: bytes, ext: str, max_vertices: int, max_faces: int) -> bytes:
    """Check `data` against the caps before trimesh parses it; returns what trimesh should parse:
    text as UTF-8, OBJ relative (negative) indices made absolute."""
    if ext == ".ply":
        start = _check_ply_header(data, max_vertices, max_faces)
        return data if data[:start].isascii() else _as_utf8(data[:start]) + data[start:]
    if ext == ".stl":
        data = _ascii_stl(data)
        return data if _check_stl(data, max_faces) else _as_utf8(data)
    if ext in (".glb", ".gltf"):
        _check_gltf(data, max_vertices, binary=ext == ".glb")
        return data
    if ext == ".off":
        return _as_utf8(_check_off_header(data, max_vertices, max_faces))
    _check_obj_counts(data, max_vertices, max_faces)
    if _OBJ_ZERO.search(data) is not None:
        raise ScanError(
            "an OBJ face uses vertex index 0: OBJ counts vertices from 1 (or -1 back from the face)"
        )
    data = data.replace(b"\t", b" ")  # OBJ allows tabs between fields; trimesh's reader looks for 'v ', 'f '
    if _OBJ_RELATIVE.search(data) is None:
        return _as_utf8(data)
    return _absolute_obj_indices(decode_text(data)).encode("utf-8")


def _absolute_obj_indices(text: str) -> str:
    """OBJ text with relative face indices made absolute: -1 is the latest v (vt, vn) before the face.

    trimesh counts them from the end of the file instead, which is right only when every vertex comes
    before every face.
    """
    seen = {"v": 0, "vt": 0, "vn": 0}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in seen:
            seen[words[0]] += 1
        elif words[0] == "f" and "-" in line:
            lines[i] = " ".join(["f", *(_absolute_corner(corner, seen) for corner in words[1:])])
    return "\n".join(lines)


def _absolute_corner(corner: str, seen: dict) -> str:
    """'-3/-1' -> '7/12' given how many v and vt were seen; positive and empty fields stay."""
    fields = corner.split("/")
    for k, kind in enumerate(("v", "vt", "vn")[: len(fields)]):
        if fields[k].startswith("-"):
            fields[k] = str(seen[kind] + 1 + int(fields[k]))
    return "/".join(fields)


def _texture_image(visual):
    """The (lazily opened, not decoded) PIL image of a trimesh TextureVisuals, or None."""
    material = getattr(visual, "material", None)
    return getattr(material, "image", None) or getattr(material, "baseColorTexture", None)


def _scene_geometry(scene, kind: str, label: str, max_vertices: int, max_faces: int):
    """A scene's instances as one geometry, its transforms applied.

    Flattening copies every instance (a node graph can instance one mesh thousands of times) and
    decodes a copy of its texture, and concatenating packs the textures into one atlas: the sizes are
    checked first, and the textures dropped (with a warning) when together they are over the cap.
    """
    import trimesh

    names = [scene.graph[node][1] for node in scene.graph.nodes_geometry]
    instances = [scene.geometry[n] for n in names if hasattr(scene.geometry.get(n), "vertices")]
    if not instances:
        raise ScanError(f"no vertices: the {kind} file holds no geometry")
    if len(instances) > _MAX_INSTANCES:
        raise ScanError(f"the scene places {len(instances)} meshes, more than the cap of {_MAX_INSTANCES}")
    nv = sum(len(g.vertices) for g in instances)
    nf = sum(len(getattr(g, "faces", ())) for g in instances)
    if nv > max_vertices or nf > max_faces:
        raise ScanError(f"{len(instances)} instances of {nv} vertices and {nf} faces in all, above the caps")
    images = [img for g in instances if (img := _texture_image(getattr(g, "visual", None))) is not None]
    pixels = sum(img.width * img.height for img in images)
    if pixels > MAX_TEXTURE_PIXELS:
        logger.warning(
            "ignoring the texture %s: %d pixels in all, more than the cap of %d",
            label,
            pixels,
            MAX_TEXTURE_PIXELS,
        )
        for g in instances:
            if _texture_image(getattr(g, "visual", None)) is not None:
                g.visual = trimesh.visual.ColorVisuals()
    geoms = [g for g in scene.dump() if hasattr(g, "vertices")]
    meshes = [g for g in geoms if isinstance(g, trimesh.Trimesh)]
    return trimesh.util.concatenate(meshes) if len(meshes) > 1 else (meshes or geoms)[0]


def _scan_from_trimesh(loaded, kind: str, label: str, load_texture: bool) -> Scan:
    import trimesh

    vertices = np.asarray(loaded.vertices)
    if len(vertices) == 0:
        raise ScanError(f"no vertices in the {kind} file")
    faces = np.asarray(loaded.faces) if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) else None
    colors = uv = texture = None
    visual = getattr(loaded, "visual", None)
    if isinstance(loaded, trimesh.PointCloud):
        colors = np.asarray(loaded.colors) if loaded.colors is not None and len(loaded.colors) else None
    elif visual is not None and visual.kind == "texture":
        image = _texture_image(visual)
        if load_texture and image is not None and visual.uv is not None and len(visual.uv) == len(vertices):
            texture = texture_pixels(image, label)
            uv = None if texture is None else np.asarray(visual.uv)
    elif visual is not None and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors)
    return Scan(vertices=vertices, faces=faces, colors=colors, uv=uv, texture=texture)
