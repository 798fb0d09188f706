"""VRML 2.0 (`.wrl`) IndexedFaceSet reader, as BU-3DFE and BU-4DFE store their scans.

Only the geometry the datasets use is read: `coord Coordinate { point [...] }`, `coordIndex`,
`texCoord TextureCoordinate { point [...] }`, `texCoordIndex` (per-corner uvs, optional: per-vertex
uvs are accepted too), `color Color { color [...] }` (per-vertex) and the `ImageTexture` url. Several
IndexedFaceSets in one file are concatenated; `Transform` fields are ignored (the datasets leave them
at identity). Nodes may come in any order, numbers may be separated by spaces, commas and newlines.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from .types import Scan, ScanError

__all__ = ["parse_wrl", "triangulate_polygons"]

_HEADER = re.compile(rb"^\s*#VRML\s+V(\d+\.\d+)")
# '#' starts a comment unless it is inside a string; the datasets put none inside strings but urls
_COMMENT = re.compile(r'("[^"\n]*")|#[^\n]*')
_DEF = r"(?:DEF\s+[^\s{}\[\]]+\s+)?"
_BLOCKS = {
    "point": re.compile(r"(?<![A-Za-z])coord\s+" + _DEF + r"Coordinate\s*\{\s*point\s*\["),
    "coordIndex": re.compile(r"(?<![A-Za-z])coordIndex\s*\["),
    "texpoint": re.compile(r"(?<![A-Za-z])texCoord\s+" + _DEF + r"TextureCoordinate\s*\{\s*point\s*\["),
    "texCoordIndex": re.compile(r"(?<![A-Za-z])texCoordIndex\s*\["),
    "color": re.compile(r"(?<![A-Za-z])color\s+" + _DEF + r"Color\s*\{\s*color\s*\["),
}
# the first `url "..."` (BU-3DFE's only url is the ImageTexture's); a literal start keeps the search
# linear, where "ImageTexture {[^}]*? url" rescans from every ImageTexture of a hostile file
_URL = re.compile(r'(?<![A-Za-z])url\s*\[?\s*"([^"\n]{1,1024})"')


_PIECE = 1 << 22  # characters parsed per numpy call


def _numbers(text: str, start: int, what: str, path: str, limit: int, dtype) -> tuple[np.ndarray, int]:
    """Numbers between `start` (just after '[') and the matching ']'; returns (array, end index).

    numpy parses the text in C, piece by piece, and parsing stops as soon as more than `limit`
    numbers were seen, so a list longer than the cap is refused without holding much more than the
    cap in memory (a Python token list would take ~50 bytes per number first).
    """
    end = text.find("]", start)
    if end < 0:
        raise ScanError(f"truncated VRML file: '{what}' list is never closed with ']' ({path})")
    pieces, total, pos = [], 0, start
    while pos < end:
        stop = min(end, pos + _PIECE)
        if stop < end:  # cut at whitespace or a comma, never inside a number
            stop = max(text.rfind(c, pos, stop) for c in " \n\t\r,")
            if stop <= pos:
                raise ScanError(
                    f"corrupt VRML '{what}' list: a token longer than {_PIECE} characters ({path})"
                )
        with warnings.catch_warnings():
            # numpy reports unparsable text as a DeprecationWarning in some versions, ValueError in others
            warnings.simplefilter("error", DeprecationWarning)
            try:
                part = np.fromstring(text[pos:stop].replace(",", " "), dtype=dtype, sep=" ")
            except (ValueError, DeprecationWarning):
                raise ScanError(f"corrupt number in VRML '{what}' list ({path})") from None
        total += len(part)
        if total > limit:
            raise ScanError(f"VRML '{what}' list has more than {limit} numbers, the cap ({path})")
        pieces.append(part)
        pos = stop + 1 if stop < end else end
    values = np.concatenate(pieces) if len(pieces) > 1 else (pieces[0] if pieces else np.zeros(0, dtype))
    return values, end + 1


def triangulate_polygons(index: np.ndarray, what: str = "coordIndex", path: str = "") -> np.ndarray:
    """Fan-triangulate a VRML polygon list.

    Args:
        index: (K,) int64, polygons separated by -1 (the last one may lack it).

    Returns:
        (T, 3) int64 triangles; polygon [a, b, c, d] gives (a, b, c), (a, c, d). Polygons with fewer
        than three corners are dropped.
    """
    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        return np.zeros((0, 3), np.int64)
    if index[-1] != -1:
        index = np.append(index, -1)
    if (index < -1).any():
        raise ScanError(f"negative index other than -1 in VRML '{what}' ({path})")
    ends = np.flatnonzero(index == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = ends - starts
    ntri = np.maximum(sizes - 2, 0)
    poly = np.repeat(np.arange(len(sizes)), ntri)  # (T,) polygon of each triangle
    k = np.arange(len(poly)) - np.repeat(np.cumsum(ntri) - ntri, ntri)  # 0..size-3 within its polygon
    first = starts[poly]
    return np.stack([index[first], index[first + k + 1], index[first + k + 2]], axis=1)


def _find_texture(folder: Path, name: str) -> Path | None:
    candidate = folder / name
    if candidate.is_file():
        return candidate
    # datasets copied from Windows disagree on case (F3D.bmp vs F3D.BMP): match case-insensitively
    lower = Path(name).name.lower()
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.lower() == lower and entry.is_file():
                return entry
    return None


def parse_wrl(
    data: bytes,
    path: str = "<bytes>",
    *,
    max_vertices: int = 2_000_000,
    max_faces: int = 4_000_000,
    load_texture: bool = True,
) -> Scan:
    """Parse VRML 2.0 bytes into a Scan (texture resolved next to `path`).

    Per-corner uvs (`texCoordIndex`) are turned into per-vertex uvs by splitting each vertex into as
    many copies as it has distinct uvs.
    """
    header = _HEADER.match(data[:64])
    if header is None:
        raise ScanError(f"not a VRML file: it does not start with '#VRML V2.0' ({path})")
    if header.group(1) != b"2.0":
        raise ScanError(f"unsupported VRML version {header.group(1).decode()}, only 2.0 is read ({path})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = _COMMENT.sub(lambda m: m.group(1) or "", text)

    sets = [m.start() for m in re.finditer(r"(?<![A-Za-z])IndexedFaceSet\b", text)] or [0]
    bounds = [*sets[1:], len(text)]
    vertices, faces, colors, uvs = [], [], [], []
    offset = 0
    for start, stop in zip(sets, bounds):
        segment = text[start:stop]
        found = {key: rx.search(segment) for key, rx in _BLOCKS.items()}
        if found["point"] is None:
            continue
        pts, _ = _numbers(segment, found["point"].end(), "point", path, 3 * max_vertices, np.float64)
        if len(pts) % 3:
            raise ScanError(f"VRML 'point' list has {len(pts)} numbers, not a multiple of 3 ({path})")
        pts = pts.reshape(-1, 3)
        nv = len(pts)
        if offset + nv > max_vertices:
            raise ScanError(f"{offset + nv} vertices, more than the cap of {max_vertices} ({path})")
        tri = np.zeros((0, 3), np.int64)
        if found["coordIndex"] is not None:
            # a polygon needs at least 4 numbers (3 corners and -1) per 2 triangles, so bound by 4x
            idx, _ = _numbers(segment, found["coordIndex"].end(), "coordIndex", path, 4 * max_faces, np.int64)
            tri = triangulate_polygons(idx, "coordIndex", path)
            if len(tri) and tri.max() >= nv:
                raise ScanError(f"VRML coordIndex refers to vertex {tri.max()} but there are {nv} ({path})")
            total = sum(len(f) for f in faces) + len(tri)
            if total > max_faces:
                raise ScanError(f"{total} faces, more than the cap of {max_faces} ({path})")
        col = None
        if found["color"] is not None:
            c, _ = _numbers(segment, found["color"].end(), "color", path, 3 * max_vertices, np.float64)
            if len(c) == 3 * nv:  # per-vertex colours; per-face ones are not used by the datasets
                col = c.reshape(-1, 3)
        uv = None
        if found["texpoint"] is not None:
            tc, _ = _numbers(
                segment, found["texpoint"].end(), "TextureCoordinate", path, 2 * 4 * max_faces, np.float64
            )
            if len(tc) % 2:
                raise ScanError(f"VRML TextureCoordinate list has an odd count {len(tc)} ({path})")
            tc = tc.reshape(-1, 2)
            if found["texCoordIndex"] is not None:
                tidx, _ = _numbers(
                    segment, found["texCoordIndex"].end(), "texCoordIndex", path, 4 * max_faces, np.int64
                )
                ttri = triangulate_polygons(tidx, "texCoordIndex", path)
                if ttri.shape != tri.shape:
                    raise ScanError(
                        f"VRML texCoordIndex has {len(ttri)} triangles but coordIndex has {len(tri)}: "
                        f"polygon sizes disagree ({path})"
                    )
                if len(ttri) and ttri.max() >= len(tc):
                    raise ScanError(
                        f"VRML texCoordIndex refers to uv {ttri.max()} but there are {len(tc)} ({path})"
                    )
                # one output vertex per distinct (vertex, uv) corner pair
                key = tri.reshape(-1) * len(tc) + ttri.reshape(-1)
                ukey, inverse = np.unique(key, return_inverse=True)
                vi, ti = ukey // len(tc), ukey % len(tc)
                # vertices no face uses keep their (absent) uv at 0 so that indices stay unique
                unused = np.setdiff1d(np.arange(nv), vi)
                vi = np.concatenate([vi, unused])
                ti_uv = np.concatenate([tc[ti], np.zeros((len(unused), 2))])
                if len(vi) > max_vertices:
                    raise ScanError(
                        f"{len(vi)} vertices after splitting uv seams, more than the cap ({path})"
                    )
                pts = pts[vi]
                col = None if col is None else col[vi]
                tri = inverse.reshape(-1, 3).astype(np.int64)
                uv = ti_uv
            elif len(tc) == nv:
                uv = tc  # per-vertex uvs (accepted for BU-4DFE, whose layout is unverified)
        vertices.append(pts)
        faces.append(tri + offset)
        colors.append(col)
        uvs.append(uv)
        offset += len(pts)

    if not vertices or offset == 0:
        raise ScanError(f"no vertices: the VRML file has no 'coord Coordinate {{ point [...] }}' ({path})")
    scan_colors = np.concatenate(colors) if all(c is not None for c in colors) else None
    scan_uv = np.concatenate(uvs) if all(u is not None for u in uvs) else None
    texture = None
    url = _URL.search(text)
    if scan_uv is not None and url is not None and load_texture and path != "<bytes>":
        tex_path = _find_texture(Path(path).parent, url.group(1))
        if tex_path is not None:
            from .io import read_image

            texture = read_image(tex_path)
    all_faces = np.concatenate(faces)
    return Scan(
        vertices=np.concatenate(vertices).astype(np.float32),
        faces=all_faces if len(all_faces) else None,
        colors=scan_colors,
        uv=scan_uv,
        texture=texture,
        path=None if path == "<bytes>" else path,
    )
