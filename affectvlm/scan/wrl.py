"""VRML 2.0 (`.wrl`) IndexedFaceSet reader, as BU-3DFE and BU-4DFE store their scans.

Only the geometry the datasets use is read: `coord Coordinate { point [...] }`, `coordIndex`,
`texCoord TextureCoordinate { point [...] }`, `texCoordIndex` (per-corner uvs, optional: per-vertex
uvs are accepted too), `color Color { color [...] }` (per-vertex) and the `ImageTexture` url. Several
IndexedFaceSets in one file are concatenated, each placed by the `Transform` nodes about it (`translation`,
`rotation`, `scale`, `scaleOrientation`, `center`, nested ones composed; the datasets leave them at identity,
other exporters scale metres to millimetres or turn the model there). Nodes may come in any order, numbers may be
separated by spaces, commas and newlines.
The texture url must name a file in the scan's own folder (no absolute path, '..' or URL scheme).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .files import confined_file, decode_text, parse_numbers, read_image
from .types import Scan, ScanError, file_tag

__all__ = ["parse_wrl", "triangulate_polygons"]

logger = logging.getLogger(__name__)

_HEADER = re.compile(rb"^\s*#VRML\s+V(\d+\.\d+)")
# '#' starts a comment unless it is inside a string; the datasets put none inside strings but urls
_COMMENT = re.compile(r'("[^"\n]*")|#[^\n]*')
_DEF = r"(?:DEF\s+[^\s{}\[\]]+\s+)?"
# Each block's keyword must start a word; that is checked by hand (`_word_search`): a lookbehind at the start of a
# pattern stops the search from skipping ahead to its literal keyword, and made each absent block cost a scan of the
# whole file at every character (0.03 s a megabyte, most of a BU-4DFE frame's parse)
_BLOCKS = {
    "point": re.compile(r"coord\s+" + _DEF + r"Coordinate\s*\{\s*point\s*\["),
    "coordIndex": re.compile(r"coordIndex\s*\["),
    "texpoint": re.compile(r"texCoord\s+" + _DEF + r"TextureCoordinate\s*\{\s*point\s*\["),
    "texCoordIndex": re.compile(r"texCoordIndex\s*\["),
    "color": re.compile(r"color\s+" + _DEF + r"Color\s*\{\s*color\s*\["),
}
# the first `url "..."` (BU-3DFE's only url is the ImageTexture's); a literal start keeps the search
# linear, where "ImageTexture {[^}]*? url" rescans from every ImageTexture of a hostile file
_URL = re.compile(r'url\s*\[?\s*"([^"\n]{1,1024})"')


# a Transform node's '{'; its fields (before or after its children) and the numbers they take
_TRANSFORM = re.compile(r"Transform\s*\{")  # starts a word: checked by hand, as the blocks' keywords are
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TRANSFORM_FIELDS = re.compile(
    rf"(?<![A-Za-z])(translation|rotation|scaleOrientation|scale|center)((?:[\s,]+{_NUMBER}){{1,4}})"
)
_BRACKET = np.zeros(256, np.int8)  # +1 for an opening brace or bracket, -1 for a closing one, by byte
_BRACKET[[ord("{"), ord("[")]], _BRACKET[[ord("}"), ord("]")]] = 1, -1
_MAX_BRACKETS = 20_000_000  # braces and brackets in a file with Transforms (a face has dozens)
_MAX_PLACING = 10_000  # Transforms with fields (a face has a few)


def _transforms(text: str, path: str) -> list[tuple[int, int, np.ndarray]]:
    """Each `Transform` node that has fields, as (offset of its '{', of its matching '}', its 4 x 4 matrix), in the
    order they open (an enclosing one before those inside it); [] for a file without them. Vectorised: a hostile
    file nests hundreds of thousands."""
    opens = np.array([m.end() - 1 for m in _TRANSFORM.finditer(text) if _starts_word(text, m.start())], np.int64)
    if not len(opens):
        return []
    chars = np.frombuffer(text.encode("latin-1", errors="replace"), np.uint8)  # one byte a character
    at = np.flatnonzero(_BRACKET[chars])
    if len(at) > _MAX_BRACKETS:
        raise ScanError(f"more than {_MAX_BRACKETS} VRML braces and brackets{file_tag(path)}")
    closing = _BRACKET[chars[at]] < 0
    depth = np.cumsum(_BRACKET[chars[at]], dtype=np.int64)  # after each bracket
    first = np.searchsorted(at, opens)  # each Transform's '{' among the brackets
    # its '}': the first closing bracket after it that leaves the depth it was opened at
    key = depth * (len(at) + 1) + np.arange(len(at))
    ends = np.flatnonzero(closing)[np.argsort(key[closing], kind="stable")]
    found = np.searchsorted(key[ends], (depth[first] - 1) * (len(at) + 1) + first)
    last = ends[np.minimum(found, len(ends) - 1)]
    matched = (found < len(ends)) & (depth[last] == depth[first] - 1)
    placed = []
    for i, j in zip(first[matched], last[matched]):
        head = text[at[i] + 1 : at[min(i + 1, j)]]
        tail = text[at[max(j - 1, i)] + 1 : at[j]] if j - 1 > i else ""
        fields = _TRANSFORM_FIELDS.findall(head) + _TRANSFORM_FIELDS.findall(tail)
        if fields:
            placed.append((int(at[i]), int(at[j]), fields))
            if len(placed) > _MAX_PLACING:
                raise ScanError(f"more than {_MAX_PLACING} VRML Transforms{file_tag(path)}")
    return [(i, j, _transform_matrix(fields, path)) for i, j, fields in placed]


def _starts_word(text: str, at: int) -> bool:
    return at == 0 or not text[at - 1].isalpha()


def _word_search(rx: re.Pattern, text: str) -> re.Match | None:
    """`rx`'s first match in `text` that starts a word (not the tail of a longer name: `texCoord` in `myTexCoord`)."""
    return next((m for m in rx.finditer(text) if _starts_word(text, m.start())), None)


def _transform_matrix(fields: list[tuple[str, str]], path: str) -> np.ndarray:
    """The matrix of a Transform's (field, numbers) pairs (VRML 2.0: T C R SR S -SR -C, on column vectors)."""
    values = {"translation": [0, 0, 0], "rotation": [0, 0, 1, 0], "scale": [1, 1, 1]}
    values |= {"scaleOrientation": [0, 0, 1, 0], "center": [0, 0, 0]}
    for name, numbers in fields:
        got = parse_numbers(numbers, f"VRML Transform '{name}'", 8, np.float64)
        if len(got) < len(values[name]) or not np.isfinite(got).all():
            raise ScanError(f"VRML Transform '{name}' needs {len(values[name])} numbers{file_tag(path)}")
        values[name] = got[: len(values[name])]

    def affine(linear=None, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = np.eye(3) if linear is None else linear, shift
        return out

    centre, scale_turn = np.asarray(values["center"], float), _axis_angle(values["scaleOrientation"])
    return (
        affine(shift=np.asarray(values["translation"], float) + centre)
        @ affine(_axis_angle(values["rotation"]))
        @ affine(scale_turn @ np.diag(values["scale"]).astype(float) @ scale_turn.T)
        @ affine(shift=-centre)
    )


def _axis_angle(rotation) -> np.ndarray:
    """A VRML rotation (axis x y z, angle in radians) as a 3 x 3 matrix; a zero axis turns nothing."""
    axis, angle = np.asarray(rotation[:3], float), float(rotation[3])
    norm = np.linalg.norm(axis)
    if norm < 1e-12:
        return np.eye(3)
    x, y, z = axis / norm
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _placed(points: np.ndarray, at: int, transforms) -> np.ndarray:
    """`points` of the IndexedFaceSet at offset `at`, through every Transform that encloses it."""
    matrix = np.eye(4)
    for start, stop, m in transforms:
        if start < at < stop:
            matrix = matrix @ m
    if np.allclose(matrix, np.eye(4)):
        return points
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _numbers(text: str, start: int, what: str, path: str, limit: int, dtype) -> np.ndarray:
    """The numbers between `start` (just after '[') and the matching ']', at most `limit` of them."""
    end = text.find("]", start)
    if end < 0:
        raise ScanError(f"truncated VRML file: '{what}' list is never closed with ']'{file_tag(path)}")
    try:
        return parse_numbers(text[start:end], f"VRML '{what}' list", limit, dtype)
    except ScanError as exc:
        raise ScanError(f"{exc}{file_tag(path)}") from None


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
        raise ScanError(f"negative index other than -1 in VRML '{what}'{file_tag(path)}")
    ends = np.flatnonzero(index == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = ends - starts
    ntri = np.maximum(sizes - 2, 0)
    poly = np.repeat(np.arange(len(sizes)), ntri)  # (T,) polygon of each triangle
    k = np.arange(len(poly)) - np.repeat(np.cumsum(ntri) - ntri, ntri)  # 0..size-3 within its polygon
    first = starts[poly]
    return np.stack([index[first], index[first + k + 1], index[first + k + 2]], axis=1)


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
    where = file_tag(path)
    header = _HEADER.match(data[:64])
    if header is None:
        raise ScanError(f"not a VRML file: it does not start with '#VRML V2.0'{where}")
    if header.group(1) != b"2.0":
        raise ScanError(f"unsupported VRML version {header.group(1).decode()}, only 2.0 is read{where}")
    text = _COMMENT.sub(lambda m: m.group(1) or "", decode_text(data))

    sets = [m.start() for m in re.finditer(r"IndexedFaceSet\b", text) if _starts_word(text, m.start())] or [0]
    transforms = _transforms(text, path)
    parts = []  # (points, triangles, colours or None, uvs or None) of each IndexedFaceSet
    nv = nf = 0
    for start, stop in zip(sets, [*sets[1:], len(text)]):
        part = _face_set(text[start:stop], path, max_vertices, max_faces)
        if part is None:
            continue
        parts.append((_placed(part[0], start, transforms), part[1] + nv, *part[2:]))
        nv, nf = nv + len(part[0]), nf + len(part[1])
        if nv > max_vertices:
            raise ScanError(f"{nv} vertices, more than the cap of {max_vertices}{where}")
        if nf > max_faces:
            raise ScanError(f"{nf} faces, more than the cap of {max_faces}{where}")
    if nv == 0:
        raise ScanError(f"no vertices: the VRML file has no 'coord Coordinate {{ point [...] }}'{where}")
    points, faces, colors, uvs = zip(*parts)
    uv = np.concatenate(uvs) if all(u is not None for u in uvs) else None
    all_faces = np.concatenate(faces)
    return Scan(
        vertices=np.concatenate(points).astype(np.float32),
        faces=all_faces if len(all_faces) else None,
        colors=np.concatenate(colors) if all(c is not None for c in colors) else None,
        uv=uv,
        texture=_texture(text, path) if uv is not None and load_texture and path != "<bytes>" else None,
        path=None if path == "<bytes>" else path,
    )


def _face_set(segment: str, path: str, max_vertices: int, max_faces: int) -> tuple | None:
    """One IndexedFaceSet's (points (N, 3), triangles (T, 3), colours (N, 3) or None, uvs (N, 2) or
    None), or None when it has no points."""
    found = {key: _word_search(rx, segment) for key, rx in _BLOCKS.items()}
    if found["point"] is None:
        return None
    where = file_tag(path)

    def numbers(key: str, what: str, limit: int, dtype) -> np.ndarray:
        return _numbers(segment, found[key].end(), what, path, limit, dtype)

    pts = numbers("point", "point", 3 * max_vertices, np.float64)
    if len(pts) % 3:
        raise ScanError(f"VRML 'point' list has {len(pts)} numbers, not a multiple of 3{where}")
    pts = pts.reshape(-1, 3)
    tri = np.zeros((0, 3), np.int64)
    if found["coordIndex"] is not None:
        # a polygon needs at least 4 numbers (3 corners and -1) per 2 triangles, so bound by 4x
        tri = triangulate_polygons(
            numbers("coordIndex", "coordIndex", 4 * max_faces, np.int64), "coordIndex", path
        )
        if len(tri) and tri.max() >= len(pts):
            raise ScanError(f"VRML coordIndex refers to vertex {tri.max()} but there are {len(pts)}{where}")
        if len(tri) > max_faces:
            raise ScanError(f"{len(tri)} faces, more than the cap of {max_faces}{where}")
    col = None
    if found["color"] is not None:
        c = numbers("color", "color", 3 * max_vertices, np.float64)
        if len(c) == 3 * len(pts):  # per-vertex colours; per-face ones are not used by the datasets
            col = c.reshape(-1, 3)
    if found["texpoint"] is None:
        return pts, tri, col, None
    tc = numbers("texpoint", "TextureCoordinate", 2 * 4 * max_faces, np.float64)
    if len(tc) % 2:
        raise ScanError(f"VRML TextureCoordinate list has an odd count {len(tc)}{where}")
    tc = tc.reshape(-1, 2)
    if found["texCoordIndex"] is not None:
        tidx = numbers("texCoordIndex", "texCoordIndex", 4 * max_faces, np.int64)
        return _split_seams(
            pts, tri, col, tc, triangulate_polygons(tidx, "texCoordIndex", path), max_vertices, path
        )
    # per-vertex uvs (accepted for BU-4DFE, whose layout is unverified)
    return pts, tri, col, tc if len(tc) == len(pts) else None


def _split_seams(pts, tri, col, tc, ttri, max_vertices: int, path: str) -> tuple:
    """Per-corner uvs to per-vertex ones: one output vertex per distinct (vertex, uv value) corner pair."""
    where = file_tag(path)
    if ttri.shape != tri.shape:
        raise ScanError(
            f"VRML texCoordIndex has {len(ttri)} triangles but coordIndex has {len(tri)}: "
            f"polygon sizes disagree{where}"
        )
    if len(ttri) and ttri.max() >= len(tc):
        raise ScanError(f"VRML texCoordIndex refers to uv {ttri.max()} but there are {len(tc)}{where}")
    tc, same = np.unique(tc, axis=0, return_inverse=True)  # a file may list one uv per corner, repeats and all
    ttri = same.reshape(-1)[ttri]
    key = tri.reshape(-1) * len(tc) + ttri.reshape(-1)
    ukey, inverse = np.unique(key, return_inverse=True)
    vi, ti = ukey // len(tc), ukey % len(tc)
    # vertices no face uses keep their (absent) uv at 0 so that indices stay unique
    unused = np.setdiff1d(np.arange(len(pts)), vi)
    vi = np.concatenate([vi, unused])
    if len(vi) > max_vertices:
        raise ScanError(f"{len(vi)} vertices after splitting uv seams, more than the cap{where}")
    uv = np.concatenate([tc[ti], np.zeros((len(unused), 2))])
    return pts[vi], inverse.reshape(-1, 3).astype(np.int64), None if col is None else col[vi], uv


def _texture(text: str, path: str) -> np.ndarray | None:
    """The image of the first `url`, read only from the scan's own folder; None without one."""
    url = _word_search(_URL, text)
    if url is None:
        return None
    found = confined_file(Path(path).parent, url.group(1))
    if found is None:
        logger.warning(
            "texture %r of %s is not a file in the scan's folder; reading the scan without it",
            url.group(1)[:200],
            Path(path).name,
        )
        return None
    return read_image(found)
