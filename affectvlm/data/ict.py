"""Locate, load and build the ICT FaceKit (ICT Face Model Light, MIT licence) as one numpy file.

A second, independent 3D morphable face model beside the Surrey Face Model (`affectvlm.data.sfm`): the USC
Institute for Creative Technologies' light-stage model, 100 identity modes and 53 expression blendshapes
named after Apple ARKit (each with a published closest FACS action unit). A face is

    neutral + sum_i w_id[i] * identity_scale[i] * identity[i] + sum_k w_ex[k] * expressions[k]

with ``w_id ~ N(0, 1)`` and expression weights in [0, 1] (:meth:`ICTModel.face`).

Where ``ict_facekit.npz`` comes from, in order (:func:`find_ict`):

1. an explicit file or folder passed to :func:`load_ict` / :func:`find_ict`;
2. ``$AFFECTVLM_ICT_DIR`` when set: then only there (set to a folder without the file, the model is missing);
3. ``../shared/ict`` beside the checkout (where CI and the tests find it);
4. the user cache, ``$XDG_CACHE_HOME/affectvlm/ict`` (default ``~/.cache/affectvlm/ict``), where
   :func:`convert_ict` (``python -m affectvlm.data ict-convert CLONE``) writes it by default.

Nothing is downloaded: the kit is a ~420 MB git repository (github.com/ICT-VGL/ICT-FaceKit) from whose
``FaceXModel/`` OBJs :func:`convert_ict` builds the 8.8 MiB npz (layout: ``../shared/ict/README.md``).

The npz stores centimetres (the kit's unit); everything is in **millimetres** after loading, as the Surrey
Face Model and the scans of BU-3DFE and Bosphorus are. +y up, +z towards the viewer.

Licence: MIT. Data and checkpoints derived only from this model carry no non-commercial restriction; keep
the kit's ``LICENSE`` beside any redistributed copy of the model file (:func:`convert_ict` copies it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .sfm import blend, write_atomically
from .sfm import default_cache_dir as sfm_cache_dir

__all__ = [
    "ICT_ENV",
    "ICT_NPZ",
    "ICT_REGIONS",
    "ICTError",
    "ICTModel",
    "ICTRegion",
    "SCAN_REGIONS",
    "convert_ict",
    "default_cache_dir",
    "find_ict",
    "ict_search_path",
    "load_ict",
]

ICT_NPZ = "ict_facekit.npz"
ICT_ENV = "AFFECTVLM_ICT_DIR"
ICT_REPO = "https://github.com/ICT-VGL/ICT-FaceKit"
# The ICT vertices kept, [start, stop) in the kit's topology table (its README): the surfaces a 3D scanner
# sees. Left out: mouth socket, gums, tongue, teeth, eye sockets, lacrimal fluid, eye blend/occlusion
# shells and eyelashes (an open mouth is a hole in a real scan).
ICT_REGIONS = {"face": (0, 9409), "headneck": (9409, 11248), "eyeballs": (21451, 24591)}
# What `triangles_for` gives by default: the skin. The eyeballs are separate closed shells, mostly inside
# the head, whose front shows through the eye openings; a range scanner sees that front (the cornea) at
# best as noise or a hole. Add "eyeballs" to fill the openings, e.g. for the eyeLook* (gaze) shapes, which
# move the eyeballs only.
SCAN_REGIONS = ("face", "headneck")
# The kit's own files, in FaceXModel/
_NEUTRAL_OBJ = "generic_neutral_mesh.obj"
_CONFIG_JSON = "vertex_indices.json"
_LANDMARKS_KEY = "idx_to_landmark_verts"  # the Multi-PIE 68 landmarks, as the kit's README lists them
_SHARED_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "ict"
_HOW_TO = (
    f"Build it from a clone of {ICT_REPO} with `python -m affectvlm.data ict-convert CLONE` (written into "
    f"the user cache, where it is found) or `... ict-convert CLONE --out DIR` and `export {ICT_ENV}=DIR` "
    "(docs/data.md, 'The ICT FaceKit')"
)
_REQUIRED = (
    "neutral", "identity", "identity_scale", "expression_names", "expressions", "triangles",
    "region_names", "region_ranges", "region_triangles", "units", "to_mm",
)  # fmt: skip


class ICTError(ValueError):
    """The ICT FaceKit could not be found, read, or built from the kit's files."""


class ICTRegion(NamedTuple):
    """A part of the model: its vertices and its triangles, as slices of `neutral` and `triangles`."""

    vertices: slice
    triangles: slice


@dataclass(frozen=True)
class ICTModel:
    """The ICT FaceKit in millimetres (arrays read-only: the loaded model is shared, see :func:`load_ict`).

    Attributes:
        neutral: (N, 3) float32 generic neutral face, mm, +y up, +z towards the viewer; N = 14,388.
        identity: (K, N, 3) float32 identity modes (deltas, mm), K = 100.
        identity_scale: (K,) float32 what a standard-normal identity weight is multiplied by (all ones).
        expression_names: the E = 53 ARKit blendshape names (``jawOpen``, ``mouthSmile_L``, ...).
        expressions: (E, N, 3) float32 expression deltas at weight 1, mm.
        triangles: (M, 3) int64, quads split in two; grouped by region, M = 28,552.
        regions: name -> :class:`ICTRegion` for ``face``, ``headneck`` and ``eyeballs``, in vertex order.
        landmarks68: (68,) int64 Multi-PIE 68 landmark vertices, or None when the file has none.
        source: the npz it was loaded from.
        stored_units, to_mm: the npz's unit ("cm") and the factor applied on loading (10).
    """

    neutral: np.ndarray
    identity: np.ndarray
    identity_scale: np.ndarray
    expression_names: list[str]
    expressions: np.ndarray
    triangles: np.ndarray
    regions: dict[str, ICTRegion]
    landmarks68: np.ndarray | None
    source: Path
    stored_units: str = "cm"
    to_mm: float = 10.0

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def nose_tip_index(self) -> int:
        """The vertex of the neutral face region with the largest z."""
        face = self.regions["face"].vertices
        return int(np.argmax(self.neutral[face, 2])) + face.start

    @property
    def licence_file(self) -> Path | None:
        """The kit's LICENSE beside the npz, if there (it must go with any redistributed copy)."""
        path = self.source.parent / "LICENSE"
        return path if path.is_file() else None

    def expression_vector(self, weights: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
        """(E,) float32 expression weights from ``{name: weight}`` (others 0) or a length-E sequence."""
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.expression_names))
            if unknown:
                raise ValueError(f"unknown ICT expression(s) {unknown}; the shapes: {self.expression_names}")
            vector = np.zeros(len(self.expression_names), np.float32)
            for name, weight in weights.items():
                vector[self.expression_names.index(name)] = weight
            return vector
        vector = np.asarray(weights, np.float32)
        if vector.shape != (len(self.expression_names),):
            raise ValueError(
                f"expression weights of shape {vector.shape}: expected ({len(self.expression_names)},)"
            )
        return vector

    def face(
        self,
        identity_weights: Sequence[float] | np.ndarray | None = None,
        expression_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    ) -> np.ndarray:
        """The (N, 3) float32 vertices in mm of a face (all regions; pick triangles with `triangles_for`).

        Args:
            identity_weights: (k,) standard-normal weights of the first k <= K identity modes (None: neutral).
            expression_weights: ``{name: weight}`` or (E,) weights in [0, 1] (None: no expression).
        """
        vertices = self.neutral.copy()
        if identity_weights is not None:
            w = np.asarray(identity_weights, np.float32)
            if w.ndim != 1 or len(w) > len(self.identity):
                raise ValueError(
                    f"identity weights of shape {w.shape}: expected (k,) with k <= {len(self.identity)}"
                )
            vertices += blend(w * self.identity_scale[: len(w)], self.identity[: len(w)])
        if expression_weights is not None:
            w = self.expression_vector(expression_weights)
            used = np.flatnonzero(w)  # usually a handful of the 53 shapes
            vertices += blend(w[used], self.expressions[used])
        return vertices

    def random_identity(self, rng: np.random.Generator | int | None = None, scale: float = 1.0) -> np.ndarray:
        """(K,) float32 identity weights ~ N(0, scale^2), as the kit's ``Scripts/sample_random.py`` draws."""
        return (np.random.default_rng(rng).standard_normal(len(self.identity)) * scale).astype(np.float32)

    def triangles_for(self, regions: Sequence[str] = SCAN_REGIONS) -> np.ndarray:
        """(M', 3) int64 triangles of the named regions (default: face and head/neck, no eyeballs)."""
        unknown = [name for name in regions if name not in self.regions]
        if unknown:
            raise ValueError(f"unknown ICT region(s) {unknown}; the regions: {list(self.regions)}")
        return np.concatenate([self.triangles[self.regions[name].triangles] for name in regions])

    def summary(self) -> str:
        """What is loaded, from where, under which licence: a few lines for people."""

        def sizes(kind: str) -> str:
            spans = ((name, getattr(region, kind)) for name, region in self.regions.items())
            return ", ".join(f"{name} {span.stop - span.start}" for name, span in spans)

        licence = self.licence_file or "none beside this file, copy the kit's there"
        if self.landmarks68 is None:
            landmarks = "none in this file"
        else:
            landmarks = f"{len(self.landmarks68)} (Multi-PIE)"
        return "\n".join((
            f"ICT FaceKit: {self.source}",
            f"vertices: {self.num_vertices} ({sizes('vertices')})",
            f"triangles: {len(self.triangles)} ({sizes('triangles')})",
            f"identity modes: {len(self.identity)} (weights ~ N(0, 1))",
            f"expression shapes: {len(self.expression_names)} ({', '.join(self.expression_names)})",
            f"landmarks: {landmarks}",
            f"units: millimetres (stored in {self.stored_units}, x{self.to_mm:g} on loading)",
            f"licence: MIT (USC ICT); the LICENSE to keep with any copy: {licence}",
        ))  # fmt: skip


# --- finding and loading ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/affectvlm/ict`` or ``~/.cache/affectvlm/ict``."""
    return sfm_cache_dir("ict")


def ict_search_path() -> list[tuple[str, Path]]:
    """(what, folder) in the order they are tried: ``$AFFECTVLM_ICT_DIR`` alone when set, else ../shared/ict
    beside the checkout, then the user cache."""
    configured = os.environ.get(ICT_ENV)
    if configured:
        return [(f"${ICT_ENV}", Path(configured).expanduser())]
    return [("beside the checkout", _SHARED_DIR), ("user cache", default_cache_dir())]


def find_ict(path: str | os.PathLike | None = None) -> Path:
    """The path of ``ict_facekit.npz``: `path` (the file or its folder), else the first folder of
    :func:`ict_search_path` that holds it.

    Raises:
        ICTError: not found; the message says where it looked and how to build the file.
    """
    if path is not None:
        npz = Path(path).expanduser()
        npz = npz if npz.suffix == ".npz" else npz / ICT_NPZ
        if not npz.is_file():
            raise ICTError(f"ICT FaceKit model not found: {npz} does not exist. {_HOW_TO}")
        return npz
    places = ict_search_path()
    for _, folder in places:
        if (folder / ICT_NPZ).is_file():
            return folder / ICT_NPZ
    looked = "; ".join(f"{folder} ({what})" for what, folder in places)
    raise ICTError(f"ICT FaceKit model not found: no {ICT_NPZ} in {looked}. {_HOW_TO}")


def load_ict(path: str | os.PathLike | None = None) -> ICTModel:
    """Load the ICT FaceKit in millimetres, found as :func:`find_ict` does (cached per file and version: a
    file converted again is read again)."""
    npz = find_ict(path).resolve()
    return _load(npz, npz.stat().st_mtime_ns)


def _read_npz(npz: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz) as d:
            arrays = {key: d[key] for key in d.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ICTError(f"{npz}: not a readable npz ({err}). {_HOW_TO}") from err
    missing = [key for key in _REQUIRED if key not in arrays]
    if missing:
        raise ICTError(f"{npz} lacks {missing}: not an ICT FaceKit file. {_HOW_TO}")
    n = arrays["neutral"].shape
    if len(n) != 2 or n[1] != 3 or arrays["identity"].shape[1:] != n or arrays["expressions"].shape[1:] != n:
        raise ICTError(f"{npz}: neutral {n}, identity {arrays['identity'].shape} and expressions "
                       f"{arrays['expressions'].shape} disagree")  # fmt: skip
    if len(arrays["expression_names"]) != len(arrays["expressions"]):
        raise ICTError(
            f"{npz}: {len(arrays['expression_names'])} names for {len(arrays['expressions'])} shapes"
        )
    if arrays["triangles"].size and not 0 <= arrays["triangles"].min() <= arrays["triangles"].max() < n[0]:
        raise ICTError(f"{npz}: triangle indices out of range for {n[0]} vertices")
    return arrays


def _frozen(array: np.ndarray, dtype) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=dtype)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4)
def _load(npz: Path, version: int) -> ICTModel:
    arrays = _read_npz(npz)
    to_mm = float(arrays["to_mm"])

    def mm(key: str) -> np.ndarray:
        return _frozen(arrays[key].astype(np.float32) * np.float32(to_mm), np.float32)

    spans = zip(arrays["region_names"], arrays["region_ranges"], arrays["region_triangles"])
    regions = {
        str(name): ICTRegion(slice(int(v0), int(v1)), slice(int(t0), int(t1)))
        for name, (v0, v1), (t0, t1) in spans
    }
    landmarks = arrays.get("landmarks68")
    return ICTModel(
        neutral=mm("neutral"),
        identity=mm("identity"),
        identity_scale=_frozen(arrays["identity_scale"], np.float32),
        expression_names=[str(name) for name in arrays["expression_names"]],
        expressions=mm("expressions"),
        triangles=_frozen(arrays["triangles"], np.int64),
        regions=regions,
        landmarks68=None if landmarks is None else _frozen(landmarks, np.int64),
        source=npz,
        stored_units=str(arrays["units"]),
        to_mm=to_mm,
    )


# --- building the npz from the kit's OBJs ---------------------------------------------------------------

_VERTEX = re.compile(rb"^v[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)", re.M)


def _obj_vertices(path: Path) -> np.ndarray:
    """(n, 3) float64 positions of an OBJ's ``v`` lines (any ``vt``/``vn``/``f`` lines are skipped)."""
    if not path.is_file():
        raise ICTError(f"{path} is missing")
    rows = _VERTEX.findall(path.read_bytes())
    try:
        vertices = np.array(rows, dtype=np.float64).reshape(-1, 3)
    except ValueError as err:
        raise ICTError(f"{path}: a vertex line does not hold three numbers ({err})") from err
    if not len(vertices):
        raise ICTError(f"{path}: no vertices")
    return vertices


def _obj_polygons(path: Path, num_vertices: int) -> list[list[int]]:
    """0-based vertex indices of each ``f`` line (``v``, ``v/vt``, ``v/vt/vn`` or ``v//vn`` corners)."""
    polygons = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith("f "):
            continue
        try:
            corners = [int(token.split("/", 1)[0]) - 1 for token in line.split()[1:]]
        except ValueError as err:
            raise ICTError(f"{path}:{number}: unreadable face line {line!r}") from err
        if len(corners) < 3 or min(corners) < 0 or max(corners) >= num_vertices:
            raise ICTError(
                f"{path}:{number}: a face needs 3+ corners in 1..{num_vertices} (no relative indices)"
            )
        polygons.append(corners)
    if not polygons:
        raise ICTError(f"{path}: no faces")
    return polygons


def _facexmodel(src: Path) -> Path:
    """The folder holding the kit's model files: `src` itself or its ``FaceXModel/``."""
    folder = src / "FaceXModel" if (src / "FaceXModel").is_dir() else src
    missing = [name for name in (_NEUTRAL_OBJ, _CONFIG_JSON) if not (folder / name).is_file()]
    if missing:
        raise ICTError(
            f"{folder} lacks {', '.join(missing)}: give a clone of {ICT_REPO} (or its FaceXModel/ folder), "
            f"e.g. `git clone --depth 1 {ICT_REPO}`"
        )
    return folder


def _identity_files(folder: Path) -> list[Path]:
    """identity000.obj, identity001.obj, ... up to the first gap, as the kit's own loader reads them."""
    paths = []
    while (folder / f"identity{len(paths):03d}.obj").is_file():
        paths.append(folder / f"identity{len(paths):03d}.obj")
    if not paths:
        raise ICTError(f"{folder} has no identity000.obj: not the kit's FaceXModel folder")
    return paths


def _ranges(counts) -> np.ndarray:
    """(R, 2) int32 [start, stop) of consecutive runs of `counts` items."""
    stops = np.cumsum(counts)
    return np.stack([stops - counts, stops], 1).astype(np.int32)


def _kept_vertices(
    regions: Mapping[str, tuple[int, int]], num_vertices: int
) -> tuple[np.ndarray, np.ndarray]:
    """(src_index, region_ranges): the kit's index of each kept vertex, region after region, and each
    region's [start, stop) among the kept vertices."""
    spans = sorted(regions.values())
    inside = all(0 <= a < b <= num_vertices for a, b in spans)
    if not inside or any(b > c for (_, b), (c, _) in zip(spans, spans[1:])):
        raise ICTError(f"regions {dict(regions)} overlap or fall outside the mesh's {num_vertices} vertices")
    src_index = np.concatenate([np.arange(a, b) for a, b in regions.values()]).astype(np.int32)
    return src_index, _ranges(np.array([b - a for a, b in regions.values()]))


def _triangulate(
    polygons: list[list[int]], src_index: np.ndarray, region_ranges: np.ndarray, num_vertices: int
) -> tuple[np.ndarray, np.ndarray]:
    """(triangles, region_triangles): each polygon fanned from its first corner (a quad into two), only the
    triangles whose corners are all kept, in kept indices, grouped by the region of that first corner (in
    file order within a region); and each region's [start, stop) among them."""
    kept = np.full(num_vertices, -1, np.int64)
    kept[src_index] = np.arange(len(src_index))
    fans = [(p[0], p[k], p[k + 1]) for p in polygons for k in range(1, len(p) - 1)]
    triangles = kept[np.array(fans, np.int64)]
    triangles = triangles[(triangles >= 0).all(1)]
    region = np.searchsorted(region_ranges[:, 1], triangles[:, 0], side="right")
    triangles = triangles[np.argsort(region, kind="stable")].astype(np.int32)
    return triangles, _ranges(np.bincount(region, minlength=len(region_ranges)))


def _deltas(paths: Sequence[Path], neutral: np.ndarray, src_index: np.ndarray) -> np.ndarray:
    """(len(paths), n, 3) float64 ``mesh - neutral`` of the kept vertices."""
    out = np.empty((len(paths), len(src_index), 3))
    for i, path in enumerate(paths):
        vertices = _obj_vertices(path)
        if vertices.shape != neutral.shape:
            raise ICTError(f"{path} has {len(vertices)} vertices, the neutral mesh {len(neutral)}")
        out[i] = (vertices - neutral)[src_index]
    return out


def _landmarks(config: dict, src_index: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    """``{"landmarks68": kept indices}`` from the config's landmark list, or {} when it has none."""
    if _LANDMARKS_KEY not in config:
        return {}
    source = np.asarray(config[_LANDMARKS_KEY], np.int64)
    position = {int(v): i for i, v in enumerate(src_index)}
    if source.shape != (68,) or any(int(v) not in position for v in source):
        raise ICTError(f"{path}: {_LANDMARKS_KEY} is not 68 indices of kept vertices")
    return {"landmarks68": np.array([position[int(v)] for v in source], np.int32)}


def convert_ict(
    facekit_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    regions: Mapping[str, tuple[int, int]] = ICT_REGIONS,
) -> Path:
    """Write ``ict_facekit.npz`` (centimetres, float16 deltas; keys in ``../shared/ict/README.md``) from a
    clone of the ICT FaceKit or its ``FaceXModel/`` folder into `out_dir` (default: the user cache), and
    copy the kit's LICENSE beside it when the clone has it.

    Read: ``generic_neutral_mesh.obj`` (its faces give the triangles), ``identity000.obj``... up to the first
    gap, one OBJ per name in ``vertex_indices.json``'s ``expressions`` (other OBJs there, such as
    ``PupilDilate_L.obj``, are not used), and that file's Multi-PIE 68 landmark list (left out when absent).

    Args:
        regions: name -> the kit's [start, stop) vertex range of each kept region (default: the kit's face,
            head/neck and eyeballs; tests give a small topology its own).

    Returns:
        The path of the npz.

    Raises:
        ICTError: a file is missing or malformed, or the meshes disagree in vertex count.
    """
    folder = _facexmodel(Path(facekit_dir).expanduser())
    config = json.loads((folder / _CONFIG_JSON).read_text(encoding="utf-8"))
    names = config.get("expressions")
    if not isinstance(names, list) or not names:
        raise ICTError(f"{folder / _CONFIG_JSON} has no 'expressions' list")
    neutral = _obj_vertices(folder / _NEUTRAL_OBJ)
    src_index, region_ranges = _kept_vertices(regions, len(neutral))
    triangles, region_triangles = _triangulate(
        _obj_polygons(folder / _NEUTRAL_OBJ, len(neutral)), src_index, region_ranges, len(neutral)
    )
    identity = _deltas(_identity_files(folder), neutral, src_index)
    face = slice(*region_ranges[list(regions).index("face")]) if "face" in regions else slice(None)
    arrays = {
        "neutral": neutral[src_index].astype(np.float32),
        "identity": identity.astype(np.float16),
        "identity_scale": np.ones(len(identity), np.float32),
        "identity_rms": np.sqrt((identity[:, face].astype(np.float32) ** 2).sum(-1).mean(-1)),
        "expression_names": np.array(names),
        "expressions": _deltas([folder / f"{name}.obj" for name in names], neutral, src_index).astype(
            np.float16
        ),
        "triangles": triangles,
        "region_names": np.array(list(regions)),
        "region_ranges": region_ranges,
        "region_triangles": region_triangles,
        "src_index": src_index,
        **_landmarks(config, src_index, folder / _CONFIG_JSON),
        "units": np.array("cm"),
        "to_mm": np.array(10.0),
    }
    out = Path(out_dir).expanduser() if out_dir is not None else default_cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    licence = next((p for p in (folder / "LICENSE", folder.parent / "LICENSE") if p.is_file()), None)
    if licence is not None and licence.resolve() != (out / "LICENSE").resolve():
        shutil.copyfile(licence, out / "LICENSE")
    write_atomically(out / ICT_NPZ, lambda f: np.savez_compressed(f, **arrays))
    return out / ICT_NPZ
