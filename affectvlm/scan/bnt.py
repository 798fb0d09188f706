"""Bosphorus `.bnt` range grids: reader and writer.

Layout (little-endian, no padding): uint16 nrows, uint16 ncols, float64 zmin, uint16 L, L bytes of
image file name, uint32 N = 5 * nrows * ncols, then N float64: all x, all y, all z, all u, all v.
Background points have z == zmin. Point k sits at grid row k // ncols (row 0 is the chin), column
k % ncols; u, v are normalised image coordinates into the PNG with v from the top.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from .files import confined_file, read_image
from .types import Scan, ScanError, file_tag

__all__ = ["parse_bnt", "read_bnt_grid", "write_bnt", "grid_to_faces"]


def read_bnt_grid(data: bytes, path: str = "<bytes>") -> dict:
    """Decode `.bnt` bytes without interpreting them.

    Returns:
        dict with nrows, ncols, zmin, image_name and `xyzuv` (nrows * ncols, 5) float64 (a read-only
        view of `data`).
    """
    where = file_tag(path)
    if len(data) < 18:
        raise ScanError(f"truncated .bnt file: {len(data)} bytes, the header alone needs 18{where}")
    nrows, ncols, zmin, name_len = struct.unpack_from("<HHdH", data, 0)
    if len(data) < 18 + name_len:
        raise ScanError(f"truncated .bnt file: image name of {name_len} bytes runs past the end{where}")
    name = data[14 : 14 + name_len].decode("latin-1")
    (count,) = struct.unpack_from("<I", data, 14 + name_len)
    if count != 5 * nrows * ncols:
        raise ScanError(
            f"corrupt .bnt header: N = {count} but 5 * nrows * ncols = {5 * nrows * ncols} "
            f"({nrows} x {ncols} grid){where}"
        )
    expected = 18 + name_len + 8 * count
    if len(data) < expected:
        raise ScanError(f"truncated .bnt file: {len(data)} bytes, the header promises {expected}{where}")
    if len(data) > expected:
        raise ScanError(f"corrupt .bnt file: {len(data) - expected} bytes after the data{where}")
    xyzuv = np.frombuffer(data, "<f8", count=count, offset=18 + name_len).reshape(5, -1).T
    return {"nrows": nrows, "ncols": ncols, "zmin": zmin, "image_name": name, "xyzuv": xyzuv}


def grid_to_faces(valid: np.ndarray) -> np.ndarray:
    """Two triangles per grid cell whose four corners are all valid.

    Args:
        valid: (nrows, ncols) bool.

    Returns:
        (M, 3) int64 indices into the flattened grid (row-major).
    """
    nrows, ncols = valid.shape
    if nrows < 2 or ncols < 2:
        return np.zeros((0, 3), np.int64)
    idx = np.arange(nrows * ncols, dtype=np.int64).reshape(nrows, ncols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    cell = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    a, b, c, d = a[cell], b[cell], c[cell], d[cell]
    return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def parse_bnt(
    data: bytes, path: str = "<bytes>", *, max_vertices: int = 2_000_000, load_texture: bool = True
) -> Scan:
    """Parse `.bnt` bytes into a mesh Scan: valid grid points (z != zmin) joined into triangles."""
    where = file_tag(path)
    grid = read_bnt_grid(data, path)
    nrows, ncols, xyzuv = grid["nrows"], grid["ncols"], grid["xyzuv"]
    if nrows * ncols > max_vertices:
        raise ScanError(f"{nrows * ncols} grid points, more than the cap of {max_vertices}{where}")
    z = xyzuv[:, 2]
    # background points have z == zmin; values far below it are treated the same way
    valid = (z > grid["zmin"]) & np.isfinite(xyzuv[:, :3]).all(axis=1)
    if not valid.any():
        raise ScanError(f"no valid points: every z equals zmin = {grid['zmin']}{where}")
    faces = grid_to_faces(valid.reshape(nrows, ncols))
    remap = np.cumsum(valid) - 1
    uv = np.stack([xyzuv[valid, 3], 1.0 - xyzuv[valid, 4]], axis=1)  # v from the top -> from the bottom
    texture = None
    if load_texture and grid["image_name"] and path != "<bytes>":
        # the name inside is often a path on the capture machine: its last part, in the scan's folder,
        # else the png beside the scan
        folder, last = Path(path).parent, re.split(r"[\\/]", grid["image_name"])[-1]
        found = confined_file(folder, last) or confined_file(folder, Path(path).with_suffix(".png").name)
        texture = None if found is None else read_image(found)
    return Scan(
        vertices=xyzuv[valid, :3].astype(np.float32),
        faces=remap[faces] if len(faces) else None,
        uv=uv if texture is not None else None,
        texture=texture,
        path=None if path == "<bytes>" else path,
    )


def write_bnt(
    path,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    nrows: int,
    ncols: int,
    zmin: float = -1e9,
    image_name: str = "image.png",
) -> None:
    """Write a Bosphorus-style `.bnt` range grid.

    Args:
        x, y, z, u, v: (nrows, ncols) or (nrows * ncols,) float arrays in grid order (row 0 = chin);
            background points must already have z == zmin. u, v: normalised image coordinates, v from
            the top.
        nrows, ncols: grid size, each below 65536.
        zmin: the background marker stored in the header.
        image_name: the texture file name stored in the header (ASCII).
    """
    if not (0 < nrows < 65536 and 0 < ncols < 65536):
        raise ScanError(f"grid size {nrows} x {ncols} does not fit the .bnt uint16 header")
    name = image_name.encode("ascii")
    if len(name) >= 65536:
        raise ScanError("image name too long for a .bnt header")
    columns = []
    for label, arr in zip("xyzuv", (x, y, z, u, v)):
        arr = np.asarray(arr, dtype="<f8").reshape(-1)
        if arr.size != nrows * ncols:
            raise ScanError(
                f"{label} has {arr.size} values, the grid needs {nrows} x {ncols} = {nrows * ncols}"
            )
        columns.append(arr)
    header = struct.pack("<HHdH", nrows, ncols, float(zmin), len(name)) + name
    header += struct.pack("<I", 5 * nrows * ncols)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.concatenate(columns).tobytes())
