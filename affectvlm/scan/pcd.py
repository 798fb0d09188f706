"""The Point Cloud Library's `.pcd` files (what PCL, Open3D and most depth-camera tools write): reader and writer.

A header of `KEY value...` lines (VERSION, FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, VIEWPOINT, POINTS, DATA)
and then the points: `DATA ascii` (one point a line), `binary` (packed records, point after point) or
`binary_compressed` (uint32 compressed size, uint32 raw size, then LZF-compressed data laid out field after
field). Points with a NaN coordinate are "no measurement" in PCL and are dropped. An organized cloud
(HEIGHT > 1: a depth camera's image, row after row, in the camera's optical frame: x right, y down, z along the
line of sight) is turned to this project's frame (+y up, +z towards the camera) and joined into a mesh the way a
range image is: two triangles per grid cell whose corners are all measured, cells much longer than the grid's
spacing (a depth edge) left open. Colour comes from a packed `rgb` / `rgba` field or from `r`, `g`, `b` fields.
"""

from __future__ import annotations

import struct

import numpy as np

from .bnt import grid_to_faces
from .files import parse_numbers, rgb_uint8
from .types import Scan, ScanError

__all__ = ["parse_pcd", "write_pcd", "lzf_decompress", "lzf_compress"]

_MAX_HEADER_BYTES = 1 << 16
_MAX_FIELDS = 256
# no file may claim more point data: 128 MiB, 2 M points of 64 bytes (PCL's PointXYZRGBNormal is 48)
_MAX_RAW_BYTES = 1 << 27
_TYPES = {("F", 4): "f4", ("F", 8): "f8", **{(t, s): f"{t.lower()}{s}" for t in "IU" for s in (1, 2, 4, 8)}}
_EDGE_FACTOR = 4.0  # an organized cloud's cells longer than this many median grid spacings are a depth edge


def parse_pcd(data: bytes, *, max_vertices: int = 2_000_000) -> Scan:
    """Parse `.pcd` bytes into a Scan: a point cloud, or a mesh when the cloud is organized (HEIGHT > 1).

    Raises:
        ScanError: for a malformed header, an unknown field type, counts beyond `max_vertices`, data that
            does not fit the header, or no point with finite coordinates.
    """
    head, body = _split_header(data)
    dtype, width, height, points, kind = _layout(head, max_vertices)
    if kind == "ascii":
        table = _ascii_points(body, dtype, points)
    elif kind == "binary":
        if len(body) < points * dtype.itemsize:
            raise ScanError(
                f"truncated .pcd data: {points} points need {points * dtype.itemsize} bytes, got {len(body)}"
            )
        table = np.frombuffer(body, dtype, count=points)
    else:
        table = _compressed_points(body, dtype, points)
    with np.errstate(over="ignore", invalid="ignore"):
        xyz = np.stack([table[c].astype(np.float64) for c in "xyz"], axis=1).astype(np.float32)
    # a sensor's frame has no point at its own origin: depth cameras write unmeasured pixels there, as PCL does NaN
    measured = np.isfinite(xyz).all(axis=1) & xyz.any(axis=1)
    if not measured.any():
        raise ScanError(
            f"no measured points: all {points} points have a NaN or infinite coordinate or are (0, 0, 0)"
        )
    colors = _colors(table)
    faces = None
    if height > 1:  # a depth camera's image, in its optical frame: turned to +y up, +z towards the camera
        xyz = _from_optical_frame(xyz, head)
        faces = _grid_faces(xyz, measured, height, width)
    keep = np.flatnonzero(measured)
    remap = np.cumsum(measured) - 1
    return Scan(
        vertices=xyz[keep],
        faces=remap[faces] if faces is not None and len(faces) else None,
        colors=None if colors is None else colors[keep],
    )


def _split_header(data: bytes) -> tuple[list[tuple[str, list[str]]], bytes]:
    """The header's (KEY, values) lines up to and including DATA, and the bytes after DATA's line."""
    entries, offset = [], 0
    while True:
        end = data.find(b"\n", offset, offset + _MAX_HEADER_BYTES)
        if end < 0 or offset >= _MAX_HEADER_BYTES:
            raise ScanError("not a .pcd file: no DATA line in the header")
        line = data[offset:end].decode("latin-1").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        entries.append((key.upper(), values))
        if key.upper() == "DATA":
            return entries, data[offset:]


def _layout(entries, max_vertices: int) -> tuple[np.dtype, int, int, int, str]:
    """The record dtype (one named field per FIELDS entry; COUNT > 1 as a sub-array), WIDTH, HEIGHT, POINTS
    and the DATA kind, checked against each other and the cap."""
    head = dict(entries)
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "DATA"):
        if key not in head:
            raise ScanError(f"not a .pcd file: the header has no {key} line")
    names, sizes, types = head["FIELDS"], head["SIZE"], [t.upper() for t in head["TYPE"]]
    counts = head.get("COUNT", ["1"] * len(names))
    if not 0 < len(names) <= _MAX_FIELDS or not len(names) == len(sizes) == len(types) == len(counts):
        raise ScanError("corrupt .pcd header: FIELDS, SIZE, TYPE and COUNT list different numbers of fields")
    if not {"x", "y", "z"} <= set(names):
        raise ScanError(f"the .pcd file has no x, y, z fields (fields: {' '.join(names[:8])})")
    fields = []
    for i, (name, size, kind, count) in enumerate(zip(names, sizes, types, counts)):
        code = _TYPES.get((kind, _integer(size, "SIZE")))
        if code is None:
            raise ScanError(f"the .pcd field {name!r} has an unknown type {kind} of {size} bytes")
        n = _integer(count, "COUNT")
        fields.append((name if name != "_" else f"_pad{i}", "<" + code, (n,) if n != 1 else ()))
    if any(shape for name, _, shape in fields if name in ("x", "y", "z")):
        raise ScanError("corrupt .pcd header: x, y and z must each have COUNT 1")
    try:
        dtype = np.dtype(fields)
    except (ValueError, TypeError) as exc:
        raise ScanError(f"corrupt .pcd header: {exc}") from None
    width = _integer(_first(head, "WIDTH", ""), "WIDTH")
    height = _integer(_first(head, "HEIGHT", "1"), "HEIGHT")
    points = _integer(_first(head, "POINTS", str(width * height)), "POINTS")
    if points != width * height:
        raise ScanError(f"corrupt .pcd header: POINTS {points} is not WIDTH x HEIGHT = {width * height}")
    if points > max_vertices:
        raise ScanError(f"{points} points, more than the cap of {max_vertices}")
    if dtype.itemsize * points > _MAX_RAW_BYTES:
        raise ScanError(
            f".pcd data of {dtype.itemsize * points} bytes, more than the cap of {_MAX_RAW_BYTES}"
        )
    kind = _first(head, "DATA", "(none)").lower()
    if kind not in ("ascii", "binary", "binary_compressed"):
        raise ScanError(f"unknown .pcd DATA kind {kind!r}; expected ascii, binary or binary_compressed")
    return dtype, width, height, points, kind


def _first(head: dict, key: str, default: str) -> str:
    values = head.get(key) or [default]
    return values[0]


def _integer(text: str, key: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise ScanError(f"corrupt .pcd header: {key} must be a whole number, got {text[:20]!r}")
    return int(text)


def _ascii_points(body: bytes, dtype: np.dtype, points: int) -> np.ndarray:
    """The ascii records: every number parsed in C as a float64 (exact for the integers a packed `rgba` holds, and
    for `nan`), then each field cast to its type."""
    width = sum(int(np.prod(dtype[name].shape, dtype=np.int64)) for name in dtype.names)
    what = f".pcd ascii data ({points} lines of {width} numbers)"
    values = parse_numbers(body.decode("latin-1"), what, points * width)
    if values.size != points * width:
        raise ScanError(
            f"the .pcd ascii data needs {points} lines of {width} numbers, it has {values.size} numbers"
        )
    values = values.reshape(points, width)
    table, column = np.zeros(points, dtype), 0
    for name in dtype.names:
        n = int(np.prod(dtype[name].shape, dtype=np.int64))
        with np.errstate(over="ignore", invalid="ignore"):
            table[name] = values[:, column : column + n].reshape(table[name].shape).astype(dtype[name].base)
        column += n
    return table


def _compressed_points(body: bytes, dtype: np.dtype, points: int) -> np.ndarray:
    """binary_compressed: the LZF-decompressed fields, each stored whole (all points' x, then all y, ...)."""
    if len(body) < 8:
        raise ScanError("truncated .pcd data: binary_compressed needs an 8-byte size header")
    packed, raw = struct.unpack_from("<II", body, 0)
    if raw != points * dtype.itemsize:
        raise ScanError(
            f"corrupt .pcd data: {raw} bytes uncompressed, the header's points need {points * dtype.itemsize}"
        )
    if packed > len(body) - 8:
        raise ScanError(f"truncated .pcd data: {packed} compressed bytes claimed, {len(body) - 8} present")
    flat = lzf_decompress(body[8 : 8 + packed], raw)
    table, start = np.zeros(points, dtype), 0
    for name in dtype.names:
        field = dtype[name]
        nbytes = field.itemsize * points
        table[name] = np.frombuffer(
            flat, field.base, count=nbytes // field.base.itemsize, offset=start
        ).reshape(table[name].shape)
        start += nbytes
    return table


def lzf_decompress(data: bytes, size: int) -> bytearray:
    """Decode an LZF stream (liblzf's format) that must expand to exactly `size` bytes.

    Each control byte c is a literal run (c < 32: the next c + 1 bytes) or a back-reference (length c >> 5,
    7 meaning 7 + the next byte, plus 2; distance ((c & 31) << 8) + the next byte + 1 behind the output's end).
    The output never grows past `size`, so a hostile stream costs at most `size` bytes and O(size) steps.
    """
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        c = data[i]
        i += 1
        if c < 32:
            run = data[i : i + c + 1]
            if len(run) != c + 1 or len(out) + len(run) > size:
                raise ScanError("corrupt .pcd data: an LZF literal runs past the end")
            out += run
            i += c + 1
            continue
        length = c >> 5
        if length == 7:
            length += data[i] if i < n else 0
            i += 1
        if i >= n:
            raise ScanError("corrupt .pcd data: an LZF back-reference is cut off")
        start = len(out) - ((c & 31) << 8) - data[i] - 1
        i += 1
        length += 2
        if start < 0 or len(out) + length > size:
            raise ScanError("corrupt .pcd data: an LZF back-reference points outside the data")
        # the source may overlap what is being written: it then repeats with the distance as its period
        period = out[start : start + length]
        out += period * (length // len(period)) + period[: length % len(period)]
    if len(out) != size:
        raise ScanError(f"corrupt .pcd data: LZF data expands to {len(out)} bytes, not {size}")
    return out


def lzf_compress(data: bytes) -> bytes:
    """Encode `data` as an LZF stream that `lzf_decompress` (and liblzf) reads: a greedy match against the last
    position of each 3-byte string, up to 264 bytes long and 8,192 behind."""
    out, literal, last, i, n = bytearray(), bytearray(), {}, 0, len(data)

    def flush() -> None:
        for k in range(0, len(literal), 32):
            chunk = literal[k : k + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    while i < n:
        key = data[i : i + 3]
        j = last.get(key, -1) if len(key) == 3 else -1
        last[key] = i
        if j < 0 or i - j > 8192:
            literal.append(data[i])
            i += 1
            continue
        length = 3
        while i + length < n and length < 264 and data[j + length] == data[i + length]:
            length += 1
        flush()
        stored, distance = length - 2, i - j - 1
        if stored < 7:
            out += bytes([(stored << 5) | (distance >> 8), distance & 255])
        else:
            out += bytes([(7 << 5) | (distance >> 8), stored - 7, distance & 255])
        i += length
    flush()
    return bytes(out)


def _colors(table: np.ndarray) -> np.ndarray | None:
    """uint8 RGB from a packed `rgb`/`rgba` field (its bytes: blue, green, red, alpha) or `r`, `g`, `b` fields."""
    names = table.dtype.names
    packed = next((n for n in ("rgb", "rgba") if n in names and table.dtype[n].itemsize == 4), None)
    if packed is not None:
        quads = np.ascontiguousarray(table[packed]).view(np.uint8).reshape(-1, 4)
        return quads[:, 2::-1].copy()
    if {"r", "g", "b"} <= set(names):
        return rgb_uint8(np.stack([table[c] for c in "rgb"], axis=1))
    return None


def _from_optical_frame(xyz: np.ndarray, entries) -> np.ndarray:
    """An organized cloud's points in its camera's frame as this project holds scans: +y up, +z towards the camera.

    A depth camera's organized cloud is in the camera's optical frame (x right, y down, z along the line of sight:
    PCL, Open3D, ROS and the camera SDKs write it so), placed in the file's frame by VIEWPOINT (translation tx ty
    tz, then the orientation as a quaternion qw qx qy qz; the identity by default)."""
    values = dict(entries).get("VIEWPOINT", [])
    try:
        pose = np.array([float(v) for v in values[:7]], np.float64)
    except ValueError:
        pose = np.zeros(0)
    rotation, shift = np.eye(3), np.zeros(3)
    if pose.shape == (7,) and np.isfinite(pose).all() and np.linalg.norm(pose[3:]) > 1e-9:
        w, x, y, z = pose[3:] / np.linalg.norm(pose[3:])
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        shift = pose[:3]
    optical = (xyz.astype(np.float64) - shift) @ rotation  # rotation.T applied to each point
    return (optical * np.array([1.0, -1.0, -1.0])).astype(np.float32)


def _grid_faces(xyz: np.ndarray, measured: np.ndarray, height: int, width: int) -> np.ndarray:
    """Two triangles per cell of the organized grid whose corners are measured and whose edges are no longer
    than `_EDGE_FACTOR` median grid spacings (longer ones step across a depth edge), turned to face the camera at
    the origin."""
    faces = grid_to_faces(measured.reshape(height, width))
    if not len(faces):
        return faces
    corners = xyz[faces].astype(np.float64)
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2)
    spacing = np.median(edges.min(axis=1))
    faces = faces[edges.max(axis=1) <= _EDGE_FACTOR * max(spacing, 1e-12) * np.sqrt(2)]
    # the grid's winding follows the image's rows, down or up: turn the triangles to face the sensor
    corners = xyz[faces].astype(np.float64)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    facing = np.einsum("ij,ij->i", normals, corners.mean(axis=1)).sum()
    return faces[:, ::-1].copy() if facing > 0 else faces


def write_pcd(path, scan: Scan, data: str = "binary", grid: tuple[int, int] | None = None) -> None:
    """Write a scan's vertices (and colours, as a packed `rgb`) as a `.pcd` point cloud.

    Args:
        data: "ascii", "binary" or "binary_compressed".
        grid: (height, width) to write an organized cloud, a depth camera's image: its height * width must be the
            vertex count, the points in the camera's optical frame (x right, y down, z along the line of sight), as
            PCL holds them, NaN where a pixel measured nothing.
    """
    height, width = grid or (1, scan.num_vertices)
    if height * width != scan.num_vertices:
        raise ScanError(
            f"a {height} x {width} grid needs {height * width} points, the scan has {scan.num_vertices}"
        )
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + (
        [("rgb", "<u4")] if scan.colors is not None else []
    )
    table = np.zeros(scan.num_vertices, fields)
    for k, c in enumerate("xyz"):
        table[c] = scan.vertices[:, k]
    if scan.colors is not None:
        rgb = scan.colors.astype(np.uint32)
        table["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    sizes, types = zip(*[(str(np.dtype(t).itemsize), "U" if t == "<u4" else "F") for _, t in fields])
    header = "\n".join(
        [
            "# .PCD v0.7 - Point Cloud Data file format",
            "VERSION 0.7",
            "FIELDS " + " ".join(name for name, _ in fields),
            "SIZE " + " ".join(sizes),
            "TYPE " + " ".join(types),
            "COUNT " + " ".join("1" for _ in fields),
            f"WIDTH {width}",
            f"HEIGHT {height}",
            "VIEWPOINT 0 0 0 1 0 0 0",
            f"POINTS {scan.num_vertices}",
            f"DATA {data}",
            "",
        ]
    ).encode("ascii")
    if data == "ascii":
        rows = [" ".join(repr(v.item()) if k < 3 else str(v) for k, v in enumerate(row)) for row in table]
        body = ("\n".join(rows) + "\n").encode("ascii")
    elif data == "binary":
        body = table.tobytes()
    elif data == "binary_compressed":
        raw = b"".join(table[name].tobytes() for name in table.dtype.names)
        packed = lzf_compress(raw)
        body = struct.pack("<II", len(packed), len(raw)) + packed
    else:
        raise ScanError(f"unknown .pcd DATA kind {data!r}; expected ascii, binary or binary_compressed")
    with open(path, "wb") as fh:
        fh.write(header + body)
