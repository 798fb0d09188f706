"""PLY headers, binary PLY bodies whose faces have different numbers of corners, and triangle strips.

Blender and MeshLab write a mesh of triangles and quads as a binary PLY with one face list of varying length;
trimesh's binary reader takes only lists of one length ("PLY is unexpected length"), so `load_scan` reads such
a file here: the vertex element in one numpy read, the face element item by item (about a microsecond each,
bounded by the face cap checked in the header), polygons fan-triangulated.

Older range scanners' tools (the Stanford and Cyberware scans, Igea among them) write the surface as triangle
strips instead of faces: a `tristrips` element whose `vertex_indices` lists run through the strips, -1 between two.
trimesh reads such a file as a point cloud and says nothing; here the strips become triangles (`strip_triangles`),
in binary and ASCII files alike.
"""

from __future__ import annotations

import struct
import warnings
from array import array
from dataclasses import dataclass, field

import numpy as np

from .files import rgb_uint8
from .types import Scan, ScanError

__all__ = ["PlyElement", "ply_elements", "read_binary_polygons", "read_strips", "has_strips", "strip_triangles"]

PLY_TYPES = {
    "char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "i2", "ushort": "u2", "int16": "i2",
    "uint16": "u2", "int": "i4", "uint": "u4", "int32": "i4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
FACE_LISTS = ("vertex_indices", "vertex_index")
FACE, STRIPS = "face", "tristrips"  # the element names of a surface's faces and of its triangle strips


@dataclass
class PlyElement:
    """One element of a PLY header: its name, item count and properties as (name, type, list count type or
    None), types as numpy type codes without byte order."""

    name: str
    count: int
    properties: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def min_item_bytes(self) -> int:
        """Bytes an item takes at least in a binary body: its scalars and its lists' counts."""
        return sum(np.dtype(count or kind).itemsize for _, kind, count in self.properties)

    @property
    def has_lists(self) -> bool:
        return any(count for _, _, count in self.properties)


def ply_elements(header: str) -> tuple[str, list[PlyElement]]:
    """The format and the elements declared in a PLY header (the text before `end_header`)."""
    lines = header.split("\n")  # as trimesh reads it (splitlines also splits at Latin-1 bytes such as 0x85)
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format") and len(ln.split()) > 1), None)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ScanError("PLY header has no valid 'format' line")
    elements: list[PlyElement] = []
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdecimal():
                raise ScanError(f"corrupt PLY header line {ln[:100]!r}")
            elements.append(PlyElement(parts[1], int(parts[2])))
        elif parts[0] == "property" and elements:
            if len(parts) == 5 and parts[1] == "list" and parts[2] in PLY_TYPES and parts[3] in PLY_TYPES:
                elements[-1].properties.append((parts[4], PLY_TYPES[parts[3]], PLY_TYPES[parts[2]]))
            elif len(parts) == 3 and parts[1] in PLY_TYPES:
                elements[-1].properties.append((parts[2], PLY_TYPES[parts[1]], None))
            else:
                raise ScanError(f"corrupt PLY property line {ln[:100]!r}")
    return fmt, elements


def has_strips(elements: list[PlyElement]) -> bool:
    """Whether a PLY header gives its surface as triangle strips only (a `tristrips` element, no face lists)."""
    named = {element.name for element in elements if element.has_lists}
    return STRIPS in named and FACE not in named


def read_strips(data: bytes, start: int, fmt: str, elements: list[PlyElement], max_items: int) -> Scan:
    """A PLY body (from `start`) whose surface is triangle strips (`has_strips`), binary or ASCII, as a Scan of
    triangles; more than `max_items` strips or triangles are refused."""
    if fmt != "ascii":
        return read_binary_polygons(data, start, fmt, elements, max_items)
    return _read_ascii(data, start, elements, max_items)


def read_binary_polygons(
    data: bytes, start: int, fmt: str, elements: list[PlyElement], max_items: int
) -> Scan:
    """A binary PLY body (from `start`) whose face lists vary in length, as a Scan of fan-triangulated faces (or
    of its triangle strips' triangles). Elements after the vertices and faces are not read; an element with lists
    of more than `max_items` items is refused (a Python step each)."""
    order = "<" if fmt == "binary_little_endian" else ">"
    pos, vertices, colors, faces = start, None, None, None
    for element in elements:
        if vertices is not None and faces is not None:
            break
        if element.name == "vertex" and element.has_lists:
            raise ScanError("PLY vertex element with list properties is not supported")
        if not element.has_lists:
            dtype = np.dtype([(name, order + kind) for name, kind, _ in element.properties])
            if pos + element.count * dtype.itemsize > len(data):
                raise ScanError(f"truncated PLY file: its {element.name} element runs past the end")
            if element.name == "vertex":
                vertices, colors = _vertex_arrays(np.frombuffer(data, dtype, element.count, pos))
            pos += element.count * dtype.itemsize
            continue
        if element.count > max_items:
            raise ScanError(
                f"PLY element {element.name!r} of {element.count} items, more than the cap of {max_items}"
            )
        pos, lists = _walk_lists(data, pos, order, element)
        if lists is not None and element.name == FACE:
            faces = _fan_triangles(data, *lists)
        elif lists is not None and element.name == STRIPS:
            indices = int(lists[1].sum())
            if indices > _STRIP_VALUES * max_items:  # checked before the values are read
                raise ScanError(f"PLY triangle strips of {indices} indices: more than the cap of {max_items} triangles")
            faces = strip_triangles(_joined_lists(data, *lists), max_items)
    if vertices is None:
        raise ScanError("no vertices: the PLY file has no vertex element with x, y and z")
    return Scan(vertices=vertices, faces=faces, colors=colors)


def _read_ascii(data: bytes, start: int, elements: list[PlyElement], max_items: int) -> Scan:
    """An ASCII PLY body whose surface is triangle strips as a Scan: elements without lists a block of numbers
    each, those with lists item by item (at most `max_items` items), the strips as `strip_triangles`. The body's
    numbers are counted before any is read: no more than the header's elements and `max_items` triangles' strips
    can hold (`_STRIP_VALUES` a triangle), so a file of a billion numbers costs a pass over its bytes, not their
    memory."""
    body = memoryview(data)[start:]  # no copy of the file until its numbers have been counted
    fixed = sum(e.count * len(e.properties) for e in elements if not e.has_lists)
    listed = sum(e.count * len(e.properties) for e in elements if e.has_lists)
    if _token_count(body) > fixed + listed + _STRIP_VALUES * max_items:
        raise ScanError(
            f"ASCII PLY file holds more numbers than its header's elements and strips of the cap of {max_items} "
            "triangles can"
        )
    values = _numbers(bytes(body))
    pos, vertices, colors, faces = 0, None, None, None
    for element in elements:
        if not element.has_lists:
            width = len(element.properties)
            if pos + element.count * width > len(values):
                raise ScanError(f"truncated PLY file: its {element.name} element runs past the end")
            if element.name == "vertex":
                block = values[pos : pos + element.count * width].reshape(element.count, width)
                names = [name for name, _, _ in element.properties]
                vertices, colors = _vertex_arrays(np.rec.fromarrays(block.T, names=names))
            pos += element.count * width
            continue
        if element.count > max_items:
            raise ScanError(
                f"PLY element {element.name!r} of {element.count} items, more than the cap of {max_items}"
            )
        pos, lists = _ascii_lists(values, pos, element)
        if element.name == STRIPS:
            faces = strip_triangles(np.concatenate([np.append(c, -1) for c in lists] or [_NO_INDICES]), max_items)
    if vertices is None:
        raise ScanError("no vertices: the PLY file has no vertex element with x, y and z")
    return Scan(vertices=vertices, faces=faces, colors=colors)


_STRIP_VALUES = 4  # the most values a triangle takes in strips: a strip of its own, (a, b, c, -1)
_NO_INDICES = np.zeros(0, np.int64)
_WHITESPACE = np.isin(np.arange(256), [9, 10, 11, 12, 13, 32])


def _token_count(body: bytes | memoryview, chunk: int = 1 << 24) -> int:
    """How many whitespace-separated tokens `body` holds, counted a chunk of bytes at a time (no token is made)."""
    raw = np.frombuffer(body, np.uint8)
    count, after_white = 0, True
    for s in range(0, len(raw), chunk):
        white = _WHITESPACE[raw[s : s + chunk]]
        count += int((~white & np.concatenate([[after_white], white[:-1]])).sum())
        after_white = bool(white[-1])
    return count


def _numbers(body: bytes) -> np.ndarray:
    """The whitespace-separated numbers of an ASCII body as float64; ScanError if anything else is there."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(body, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            raise ScanError("corrupt PLY file: its body holds something that is not a number") from None


def _ascii_lists(values: np.ndarray, pos: int, element: PlyElement) -> tuple[int, list[np.ndarray]]:
    """Step through an ASCII element with lists (its numbers from `pos`); returns the position after it and each
    item's index list (int64)."""
    lists = []
    for _ in range(element.count):
        corners = _NO_INDICES
        for name, _, count in element.properties:
            n = 0  # a scalar: one number; a list: its count, then that many
            if count:
                n = values[pos] if pos < len(values) else 0.0
                if not np.isfinite(n) or n < 0 or n != int(n):
                    raise ScanError(f"corrupt PLY file: a list of its {element.name} element has count {n:g}")
            if pos + 1 + int(n) > len(values):
                raise ScanError(f"truncated PLY file: its {element.name} element runs past the end")
            if count and name in FACE_LISTS:
                corners = values[pos + 1 : pos + 1 + int(n)].astype(np.int64)
            pos += 1 + int(n)
        lists.append(corners)
    return pos, lists


_NO_FACES = np.zeros((0, 3), np.int64)


def strip_triangles(indices: np.ndarray, max_triangles: int) -> np.ndarray:
    """(T, 3) int64 triangles of triangle strips run together in `indices` (1-D), a negative index between two.

    The strip (a, b, c, d, e) gives (a, b, c), (c, b, d) and (c, d, e): every second triangle is turned so that
    all wind alike. Triangles with a repeated corner (the joins some writers make by repeating a vertex) are
    dropped. More than `max_triangles` triangles are refused."""
    idx = np.asarray(indices, np.int64).ravel()
    if len(idx) < 3:
        return _NO_FACES.copy()
    breaks = idx < 0
    where = np.arange(len(idx))
    within = where - np.maximum.accumulate(np.where(breaks, where, -1)) - 1  # place in its strip
    k = np.flatnonzero(~(breaks[:-2] | breaks[1:-1] | breaks[2:]))
    a, b, c = idx[k], idx[k + 1], idx[k + 2]
    odd = within[k] % 2 == 1
    tris = np.stack([np.where(odd, b, a), np.where(odd, a, b), c], axis=1)
    tris = tris[(a != b) & (b != c) & (a != c)]
    if len(tris) > max_triangles:
        raise ScanError(f"PLY triangle strips make {len(tris)} triangles, more than the cap of {max_triangles}")
    return tris


def _vertex_arrays(items: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    names = items.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise ScanError("no vertices: the PLY vertex element has no x, y and z")
    vertices = np.stack([items[k].astype(np.float64) for k in "xyz"], axis=1)
    rgb = [k for k in ("red", "green", "blue") if k in names]
    colors = rgb_uint8(np.stack([items[k] for k in rgb], axis=1)) if len(rgb) == 3 else None
    return vertices, colors


def _walk_lists(data: bytes, pos: int, order: str, element: PlyElement) -> tuple[int, tuple | None]:
    """Step through an element with list properties item by item; returns the position after it and, for a
    face list, where each item's list starts, how many values it holds and their type (None without one)."""
    steps = []  # (count struct or None for a scalar, value size, is the face list)
    for name, kind, count in element.properties:
        counter = struct.Struct(order + np.dtype(count).char) if count else None
        steps.append((counter, np.dtype(kind).itemsize, name in FACE_LISTS))
    face_kind = next((kind for name, kind, count in element.properties if count and name in FACE_LISTS), None)
    offsets, sizes = array("q"), array("q")  # where each polygon's corners start, and how many
    try:
        for _ in range(element.count):
            for counter, size, is_face in steps:
                if counter is None:
                    pos += size
                    continue
                (n,) = counter.unpack_from(data, pos)
                pos += counter.size
                if is_face:
                    offsets.append(pos)
                    sizes.append(n)
                pos += n * size
            if pos > len(data):
                raise struct.error("past the end")
    except struct.error:
        raise ScanError(f"truncated PLY file: its {element.name} element runs past the end") from None
    if face_kind is None:
        return pos, None
    return pos, (np.asarray(offsets), np.asarray(sizes), np.dtype(order + face_kind))


def _joined_lists(data: bytes, offsets: np.ndarray, sizes: np.ndarray, kind: np.dtype) -> np.ndarray:
    """The values of the lists of `kind` at `offsets` (of `sizes` values each) as one int64 array, -1 after each."""
    parts = [np.append(np.frombuffer(data, kind, n, o).astype(np.int64), -1) for o, n in zip(offsets, sizes)]
    return np.concatenate(parts or [np.zeros(0, np.int64)])


def _fan_triangles(data: bytes, offsets: np.ndarray, sizes: np.ndarray, kind: np.dtype) -> np.ndarray:
    """(T, 3) int64 triangles of the polygons whose n corners of `kind` start at each offset: (a, b, c, d)
    gives (a, b, c) and (a, c, d); polygons of fewer than three corners are dropped."""
    raw = np.frombuffer(data, dtype=np.uint8)
    out = [np.zeros((0, 3), np.int64)]
    for n in np.unique(sizes[sizes >= 3]):
        where = offsets[sizes == n]
        for s in range(0, len(where), 1 << 16):  # bounded temporaries: 64k polygons at a time
            byte = where[s : s + (1 << 16), None] + np.arange(int(n) * kind.itemsize)
            corners = raw[byte].view(kind).astype(np.int64)  # (m, n)
            k = np.arange(1, int(n) - 1)
            fan = np.stack(np.broadcast_arrays(corners[:, :1], corners[:, k], corners[:, k + 1]), axis=-1)
            out.append(fan.reshape(-1, 3))
    return np.concatenate(out)
