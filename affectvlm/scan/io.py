"""`load_scan`: read any supported scan file into a `Scan`, or fail with a `ScanError`.

Formats: VRML 2.0 `.wrl` and Bosphorus `.bnt` (own parsers); OBJ, PLY, STL, OFF, GLB/GLTF through
trimesh (after our own header checks, so that a header that lies about sizes fails before anything
is allocated); point clouds in PLY, `.xyz`/`.pts`/`.txt` (x y z [r g b] per line) and `.npy`
((N, 3) or (N, 6) with colours).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
from pathlib import Path

import numpy as np

from .types import Scan, ScanError

__all__ = ["load_scan", "read_image", "SUPPORTED_EXTENSIONS", "DEFAULT_MAX_FILE_BYTES"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB: a 2 M-vertex ASCII scan with texture coordinates is ~300 MB
_MAX_NONFINITE_FRACTION = 0.5  # drop NaN/Inf vertices when they are few, refuse the scan when they are most
_MAX_TEXTURE_PIXELS = 64 * 1024 * 1024
_TRIMESH = {".obj", ".ply", ".stl", ".off", ".glb", ".gltf"}
_POINTS = {".xyz", ".pts", ".txt"}
SUPPORTED_EXTENSIONS = tuple(sorted({".wrl", ".vrml", ".bnt", ".npy", *_TRIMESH, *_POINTS}))


def read_image(path) -> np.ndarray:
    """Read a texture image as (H, W, 3) uint8, refusing decompression bombs."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.width * img.height > _MAX_TEXTURE_PIXELS:
                raise ScanError(f"texture {img.width} x {img.height} is larger than the cap ({path})")
            return np.array(img.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ScanError(f"cannot read texture image: {exc} ({path})") from None


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
        load_texture: read the texture image that a `.wrl`, `.bnt` or `.obj` refers to.

    Returns:
        The Scan, with NaN/Inf vertices dropped (and the faces using them); a scan where most
        vertices are NaN/Inf is refused.

    Raises:
        ScanError: for every file that cannot be used, naming the problem and the file.
    """
    path = os.fspath(path)
    ext = Path(path).suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ScanError(
            f"unknown scan extension {ext or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)} ({path})"
        )
    if not os.path.isfile(path):
        raise ScanError(f"no such file ({path})")
    size = os.path.getsize(path)
    if size == 0:
        raise ScanError(f"empty file ({path})")
    if size > max_file_bytes:
        raise ScanError(f"file of {size} bytes is larger than the cap of {max_file_bytes} ({path})")
    with open(path, "rb") as fh:
        data = fh.read()
    caps = {"max_vertices": max_vertices, "max_faces": max_faces}
    if ext in (".wrl", ".vrml"):
        from .wrl import parse_wrl

        scan = parse_wrl(data, path, load_texture=load_texture, **caps)
    elif ext == ".bnt":
        from .bnt import parse_bnt

        scan = parse_bnt(data, path, max_vertices=max_vertices, load_texture=load_texture)
    elif ext == ".npy":
        scan = _load_npy(data, path, max_vertices)
    elif ext in _POINTS:
        scan = _load_points_text(data, path, max_vertices)
    else:
        scan = _load_trimesh(data, path, ext, load_texture=load_texture, **caps)
    if scan.num_vertices > max_vertices:
        raise ScanError(f"{scan.num_vertices} vertices, more than the cap of {max_vertices} ({path})")
    if scan.num_faces > max_faces:
        raise ScanError(f"{scan.num_faces} faces, more than the cap of {max_faces} ({path})")
    return drop_nonfinite(scan)


def drop_nonfinite(scan: Scan) -> Scan:
    """Drop NaN/Inf vertices (and faces using them) when they are few; refuse the scan when most are."""
    where = f" ({scan.path})" if scan.path else ""
    if scan.num_vertices == 0:
        raise ScanError(f"no vertices{where}")
    if np.isfinite(scan.vertices).all():  # the common case, without a slow per-row reduction
        return scan
    finite = np.isfinite(scan.vertices).all(axis=1)
    bad = int((~finite).sum())
    if bad == 0:
        return scan
    if bad > _MAX_NONFINITE_FRACTION * len(finite):
        raise ScanError(f"{bad} of {len(finite)} vertices are NaN or Inf{where}")
    logger.warning("dropping %d NaN/Inf vertices of %d%s", bad, len(finite), where)
    return scan.subset(finite)


# ---------------------------------------------------------------------------------------------
# point clouds


def _load_npy(data: bytes, path: str, max_vertices: int) -> Scan:
    try:
        # read the header first: its shape must pass the cap before np.load allocates anything
        fh = io.BytesIO(data)
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fh)
    except ValueError as exc:
        raise ScanError(f"not a valid .npy file: {exc} ({path})") from None
    if len(shape) != 2 or shape[1] not in (3, 6):
        raise ScanError(f".npy point cloud must have shape (N, 3) or (N, 6), got {shape} ({path})")
    if shape[0] > max_vertices:
        raise ScanError(f"{shape[0]} points, more than the cap of {max_vertices} ({path})")
    if dtype.hasobject or dtype.kind not in "fiu":
        raise ScanError(f".npy point cloud must be numeric, got dtype {dtype} ({path})")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ScanError(f"truncated or corrupt .npy file: {exc} ({path})") from None
    colors = arr[:, 3:6] if arr.shape[1] == 6 else None
    if colors is not None:
        colors = np.clip(np.nan_to_num(colors), 0, 255)
        if colors.max(initial=0) <= 1.0:  # colours stored as floats in [0, 1]
            colors = colors * 255.0
        colors = colors.round().astype(np.uint8)
    return Scan(vertices=arr[:, :3], colors=colors, path=path)


def _load_points_text(data: bytes, path: str, max_vertices: int) -> Scan:
    # count lines in C before splitting: a list of lines costs ~50 bytes each
    if data.count(b"\n") > 2 * max_vertices + 1024:
        raise ScanError(f"point file has more lines than twice the cap of {max_vertices} points ({path})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScanError(f"point cloud text file is not text ({path})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "//"))]
    if not lines:
        raise ScanError(f"no vertices: the point file has no data lines ({path})")
    if len(lines) > max_vertices:
        raise ScanError(f"{len(lines)} points, more than the cap of {max_vertices} ({path})")
    ncols = len(re.split(r"[\s,;]+", lines[0].strip()))
    if ncols < 3:
        raise ScanError(f"point lines need at least 3 numbers (x y z), got {ncols} ({path})")
    try:
        arr = np.array(re.split(r"[\s,;]+", " ".join(lines).strip()), dtype=np.float64)
    except ValueError as exc:
        raise ScanError(f"corrupt number in point file: {exc} ({path})") from None
    if arr.size != ncols * len(lines):
        raise ScanError(f"point lines have different numbers of columns (first has {ncols}) ({path})")
    arr = arr.reshape(len(lines), ncols)
    colors = None
    if ncols >= 6:
        c = np.clip(np.nan_to_num(arr[:, 3:6]), 0, 255)
        colors = (c * 255.0 if c.max(initial=0) <= 1.0 else c).round().astype(np.uint8)
    return Scan(vertices=arr[:, :3], colors=colors, path=path)


# ---------------------------------------------------------------------------------------------
# header checks for the formats trimesh reads: counts must pass the caps and fit in the file

_PLY_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}  # fmt: skip


def _check_ply_header(data: bytes, path: str, max_vertices: int, max_faces: int) -> None:
    end = data.find(b"end_header", 0, 1 << 16)
    if not data.startswith(b"ply") or end < 0:
        raise ScanError(f"not a PLY file: no 'ply' magic or no 'end_header' in the first 64 KiB ({path})")
    lines = data[:end].decode("latin-1").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format") and len(ln.split()) > 1), None)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ScanError(f"PLY header has no valid 'format' line ({path})")
    elements: list[list] = []  # [name, count, min bytes per item]
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise ScanError(f"corrupt PLY header line {ln!r} ({path})")
            elements.append([parts[1], int(parts[2]), 0])
        elif parts[0] == "property" and elements:
            if parts[1] == "list" and len(parts) == 5:
                count_size = _PLY_SIZES.get(parts[2])
                if count_size is None:
                    raise ScanError(f"unknown PLY type in {ln!r} ({path})")
                elements[-1][2] += count_size
            elif len(parts) == 3 and parts[1] in _PLY_SIZES:
                elements[-1][2] += _PLY_SIZES[parts[1]]
            else:
                raise ScanError(f"corrupt PLY property line {ln!r} ({path})")
    counts = {name: count for name, count, _ in elements}
    if counts.get("vertex", 0) > max_vertices:
        raise ScanError(
            f"PLY header claims {counts['vertex']} vertices, more than the cap of {max_vertices} ({path})"
        )
    if counts.get("face", 0) > max_faces:
        raise ScanError(
            f"PLY header claims {counts['face']} faces, more than the cap of {max_faces} ({path})"
        )
    body = len(data) - end - len(b"end_header")
    # every item takes at least its fixed-size bytes (binary) or two characters per property (ascii)
    need = sum(count * (size if fmt != "ascii" else 2) for _, count, size in elements)
    if need > body:
        raise ScanError(
            f"truncated PLY file: the header promises at least {need} bytes of data, {body} remain ({path})"
        )


def _check_off_header(data: bytes, path: str, max_vertices: int, max_faces: int) -> None:
    tokens = re.sub(rb"#[^\n]*", b"", data[:4096]).split()
    if not tokens or not tokens[0].endswith(b"OFF"):
        raise ScanError(f"not an OFF file: it does not start with 'OFF' ({path})")
    try:
        nv, nf = int(tokens[1]), int(tokens[2])
    except (IndexError, ValueError):
        raise ScanError(f"corrupt OFF header: no vertex and face counts ({path})") from None
    if nv > max_vertices or nf > max_faces:
        raise ScanError(f"OFF header claims {nv} vertices and {nf} faces, above the caps ({path})")
    if 6 * nv + 8 * nf > len(data):  # 'x y z\n' and '3 a b c\n' need at least that many characters
        raise ScanError(f"truncated OFF file: the header claims {nv} vertices and {nf} faces ({path})")


def _check_stl(data: bytes, path: str, max_faces: int) -> None:
    if len(data) < 84 and not data.lstrip().startswith(b"solid"):
        raise ScanError(f"truncated STL file: {len(data)} bytes ({path})")
    if len(data) >= 84:
        (count,) = struct.unpack_from("<I", data, 80)
        if 84 + 50 * count == len(data):
            if count > max_faces:
                raise ScanError(f"STL has {count} triangles, more than the cap of {max_faces} ({path})")
            return
    if not data.lstrip().startswith(b"solid"):
        raise ScanError(f"truncated or corrupt binary STL: size does not match its triangle count ({path})")


def _check_text_counts(data: bytes, path: str, ext: str, max_vertices: int, max_faces: int) -> None:
    """OBJ and ASCII STL have no header: count their records in C before trimesh parses them."""
    if ext == ".obj":
        nv = data.count(b"\nv ") + data.startswith(b"v ")
        nf = data.count(b"\nf ") + data.startswith(b"f ")
    else:
        nv, nf = 0, data.count(b"facet normal")
    if nv > max_vertices:
        raise ScanError(f"{nv} vertex records, more than the cap of {max_vertices} ({path})")
    if nf > max_faces:
        raise ScanError(f"{nf} face records, more than the cap of {max_faces} ({path})")


def _check_glb(data: bytes, path: str, max_vertices: int) -> None:
    if len(data) < 20 or data[:4] != b"glTF":
        raise ScanError(f"not a GLB file: no 'glTF' magic ({path})")
    _, _, total = struct.unpack_from("<4sII", data, 0)
    json_len, json_type = struct.unpack_from("<II", data, 12)
    if total != len(data) or 20 + json_len > len(data) or json_type != 0x4E4F534A:
        raise ScanError(f"truncated or corrupt GLB file: header sizes do not match the file ({path})")
    try:
        doc = json.loads(data[20 : 20 + json_len])
    except ValueError:
        raise ScanError(f"corrupt GLB file: its JSON chunk does not parse ({path})") from None
    for acc in doc.get("accessors", []):
        if int(acc.get("count", 0)) > 4 * max_vertices:
            raise ScanError(f"GLB accessor claims {acc['count']} items, above the caps ({path})")
    for view in doc.get("bufferViews", []):
        if int(view.get("byteOffset", 0)) + int(view.get("byteLength", 0)) > len(data):
            raise ScanError(f"truncated GLB file: a buffer view runs past the end ({path})")


def _load_trimesh(
    data: bytes, path: str, ext: str, *, max_vertices: int, max_faces: int, load_texture: bool
) -> Scan:
    if ext == ".ply":
        _check_ply_header(data, path, max_vertices, max_faces)
    elif ext == ".off":
        _check_off_header(data, path, max_vertices, max_faces)
    elif ext == ".stl":
        _check_stl(data, path, max_faces)
        if data.lstrip().startswith(b"solid"):
            _check_text_counts(data, path, ext, max_vertices, max_faces)
    elif ext == ".obj":
        _check_text_counts(data, path, ext, max_vertices, max_faces)
    elif ext == ".glb":
        _check_glb(data, path, max_vertices)
    import trimesh

    try:
        # process=False keeps the file's vertex order and count (no merging, no removal)
        loaded = trimesh.load(path, file_type=ext[1:], process=False, maintain_order=True)
    except ScanError:
        raise
    except Exception as exc:  # trimesh raises many types (ValueError, KeyError, IndexError, struct.error...)
        raise ScanError(f"cannot read {ext[1:].upper()} file: {type(exc).__name__}: {exc} ({path})") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if hasattr(g, "vertices")] if loaded.geometry else []
        if not geoms:
            raise ScanError(f"no vertices: the {ext[1:].upper()} file holds no geometry ({path})")
        meshes = [g for g in geoms if isinstance(g, trimesh.Trimesh)]
        loaded = trimesh.util.concatenate(meshes) if meshes else geoms[0]
    vertices = np.asarray(loaded.vertices)
    if len(vertices) == 0:
        raise ScanError(f"no vertices in {ext[1:].upper()} file ({path})")
    faces = np.asarray(loaded.faces) if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) else None
    colors = uv = texture = None
    visual = getattr(loaded, "visual", None)
    if isinstance(loaded, trimesh.PointCloud):
        c = np.asarray(loaded.colors) if loaded.colors is not None and len(loaded.colors) else None
        colors = c if c is not None and len(c) == len(vertices) and np.ptp(c[:, :3]) > 0 else c
    elif visual is not None and visual.kind == "texture":
        if visual.uv is not None and len(visual.uv) == len(vertices):
            uv = np.asarray(visual.uv)
            image = getattr(visual.material, "image", None) or getattr(
                visual.material, "baseColorTexture", None
            )
            if image is not None and load_texture:
                texture = np.asarray(image.convert("RGB"))
    elif visual is not None and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors)
    if uv is not None and texture is None:
        uv = None
    return Scan(vertices=vertices, faces=faces, colors=colors, uv=uv, texture=texture, path=path)
