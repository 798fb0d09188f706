"""PLY headers, and binary PLY bodies whose faces have different numbers of corners.

Blender and MeshLab write a mesh of triangles and quads as a binary PLY with one face list of varying length;
trimesh's binary reader takes only lists of one length ("PLY is unexpected length"), so `load_scan` reads such
a file here: the vertex element in one numpy read, the face element item by item (about a microsecond each,
bounded by the face cap checked in the header), polygons fan-triangulated.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

import numpy as np

from .files import rgb_uint8
from .types import Scan, ScanError

__all__ = ["PlyElement", "ply_elements", "read_binary_polygons"]

PLY_TYPES = {
    "char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "i2", "ushort": "u2", "int16": "i2",
    "uint16": "u2", "int": "i4", "uint": "u4", "int32": "i4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
FACE_LISTS = ("vertex_indices", "vertex_index")


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


def read_binary_polygons(
    data: bytes, start: int, fmt: str, elements: list[PlyElement], max_items: int
) -> Scan:
    """A binary PLY body (from `start`) whose face lists vary in length, as a Scan of fan-triangulated faces.
    Elements after the vertices and faces are not read; an element with lists of more than `max_items` items
    is refused (a Python step each)."""
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
        pos, polygons = _walk_lists(data, pos, order, element)
        if element.name == "face":
            faces = polygons
    if vertices is None:
        raise ScanError("no vertices: the PLY file has no vertex element with x, y and z")
    return Scan(vertices=vertices, faces=faces, colors=colors)


def _vertex_arrays(items: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    names = items.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise ScanError("no vertices: the PLY vertex element has no x, y and z")
    vertices = np.stack([items[k].astype(np.float64) for k in "xyz"], axis=1)
    rgb = [k for k in ("red", "green", "blue") if k in names]
    colors = rgb_uint8(np.stack([items[k] for k in rgb], axis=1)) if len(rgb) == 3 else None
    return vertices, colors


def _walk_lists(data: bytes, pos: int, order: str, element: PlyElement) -> tuple[int, np.ndarray | None]:
    """Step through an element with list properties item by item; returns the position after it and, for a
    face list, its polygons as (T, 3) fan triangles (None without one)."""
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
    return pos, _fan_triangles(data, np.asarray(offsets), np.asarray(sizes), np.dtype(order + face_kind))


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
