"""Locate, download and load the Surrey Face Model (SFM, 3,448 vertices) with its expression blendshapes.

Where the model comes from, in order:

1. an explicit folder passed to :func:`load_sfm` / :func:`find_sfm_dir`;
2. ``$AFFECTVLM_SFM_DIR`` (CI and tests point it at ``../shared/sfm``);
3. the user cache, ``$XDG_CACHE_HOME/affectvlm/sfm`` (default ``~/.cache/affectvlm/sfm``);
4. a download of the two original cereal ``.bin`` files from the eos repository into that cache, each
   checked against its published sha256, then converted to ``sfm_3448.npz`` (:func:`download_sfm`).

A folder may hold ``sfm_3448.npz`` (plain numpy arrays) or the two original ``.bin`` files, which are read by
:func:`read_cereal_shape_model` / :func:`read_cereal_blendshapes`, a pure-numpy reader of the cereal binary
archive verified array-for-array against ``sfm_3448.npz``. :func:`convert_sfm` writes the npz from the two
files (``python -m affectvlm.data sfm-convert SRC --out DIR``), the same arrays, dtypes and layout.

Licence: the model files are free for non-commercial use only (research and teaching). Never commit them,
and say so wherever something derived from them (generated scans, checkpoints) is shipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "EXPRESSION_NAMES",
    "SFM_FILES",
    "SFM_NPZ",
    "SFMError",
    "SurreyFaceModel",
    "convert_sfm",
    "default_cache_dir",
    "download_sfm",
    "find_sfm_dir",
    "load_sfm",
    "read_cereal_blendshapes",
    "read_cereal_shape_model",
    "symmetry_pairs",
]

EXPRESSION_NAMES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")

_EOS_RAW = "https://raw.githubusercontent.com/patrikhuber/eos/master/share/"
# file name -> (url, sha256); the two originals the model is built from (../shared/sfm/README.md)
SFM_FILES = {
    "sfm_shape_3448.bin": (
        _EOS_RAW + "sfm_shape_3448.bin",
        "43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980",
    ),
    "expression_blendshapes_3448.bin": (
        _EOS_RAW + "expression_blendshapes_3448.bin",
        "a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43",
    ),
}
# Optional: the reference symmetry file from the same folder; without it the pairs are computed by mirroring.
SYMMETRY_FILE = "sfm_reference_symmetry.txt"
# No published checksum for it: its content is range-checked when parsed instead.
SYMMETRY_URL = _EOS_RAW + SYMMETRY_FILE
# The plain-numpy form of the two files (what the tests load), written by `convert_sfm`.
SFM_NPZ = "sfm_3448.npz"


class SFMError(RuntimeError):
    """The Surrey Face Model could not be found, downloaded, verified or parsed."""


@dataclass(frozen=True)
class SurreyFaceModel:
    """The shape PCA model and the six expression blendshapes.

    Attributes:
        mean: (N, 3) float32, the mean face in millimetres (+y up, +z towards the viewer), N = 3448.
        basis: (3N, K) float32 orthonormal PCA basis of the flattened xyz shape, K = 63.
        eigenvalues: (K,) float32 variance of each component.
        triangles: (M, 3) int64 vertex indices, M = 6736.
        texcoords: (N, 2) float32 per-vertex uv.
        expressions: (6, N, 3) float32 displacement of each expression at full intensity, in
            `EXPRESSION_NAMES` order.
        symmetry: (N,) int64, each vertex's left/right mirror counterpart (0-based).
        source: the folder it was loaded from.
    """

    mean: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray
    triangles: np.ndarray
    texcoords: np.ndarray
    expressions: np.ndarray
    symmetry: np.ndarray
    source: Path

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    def identity(self, coefficients: np.ndarray) -> np.ndarray:
        """Shapes from standard-normal coefficients.

        Args:
            coefficients: (K,) or (B, K) standard-normal coefficients (scaled here by sqrt(eigenvalues)).

        Returns:
            (N, 3) or (B, N, 3) float32 vertices in millimetres.
        """
        z = np.asarray(coefficients, dtype=np.float32)
        flat = np.einsum("...k,nk->...n", z * np.sqrt(self.eigenvalues), self.basis)  # (..., K) -> (..., 3N), as `blend`
        return self.mean + flat.reshape(*z.shape[:-1], -1, 3)


def default_cache_dir(model: str = "sfm") -> Path:
    """A face model's user cache folder: ``$XDG_CACHE_HOME/affectvlm/<model>`` or ``~/.cache/affectvlm/<model>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "affectvlm" / model


def _has_model(folder: Path) -> bool:
    return (folder / SFM_NPZ).is_file() or _has_originals(folder)


def _has_originals(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SFM_FILES)


def find_sfm_dir(sfm_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding the model: `sfm_dir`, else ``$AFFECTVLM_SFM_DIR``, else the user cache (downloading
    into it when `download` is true and it is empty).

    Raises:
        SFMError: an explicitly named folder lacks the files, or nothing is found and the download fails.
    """
    for name, folder in (("sfm_dir", sfm_dir), ("AFFECTVLM_SFM_DIR", os.environ.get("AFFECTVLM_SFM_DIR"))):
        if folder:
            folder = Path(folder).expanduser()
            if not _has_model(folder):
                raise SFMError(f"{name}={folder} holds neither {SFM_NPZ} nor both of {sorted(SFM_FILES)}")
            return folder
    cache = default_cache_dir()
    if _has_model(cache):
        return cache
    if not download:
        raise SFMError(
            f"Surrey Face Model not found: set AFFECTVLM_SFM_DIR or run `python -m affectvlm.data sfm` "
            f"to download it into {cache}"
        )
    return download_sfm(cache)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sfm(folder: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download the two original model files from the eos repository into `folder` (default: user cache),
    checking each sha256, and convert them to ``sfm_3448.npz`` there (:func:`convert_sfm`); the symmetry file
    is fetched too when reachable (it is optional).

    Returns:
        The folder.

    Raises:
        SFMError: offline, or a file's checksum does not match (the partial file is removed).
    """
    folder = Path(folder) if folder is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in SFM_FILES.items():
        target = folder / name
        if target.is_file() and _sha256(target) == sha256:
            continue
        _fetch(url, target, timeout)
        got = _sha256(target)
        if got != sha256:
            target.unlink()
            raise SFMError(f"{name} downloaded from {url} has sha256 {got}, expected {sha256}; removed it")
    if not (folder / SYMMETRY_FILE).is_file():
        try:
            _fetch(SYMMETRY_URL, folder / SYMMETRY_FILE, timeout)
        except SFMError:
            pass  # optional: symmetry_pairs() falls back to mirrored nearest neighbours
    if not (folder / SFM_NPZ).is_file():
        convert_sfm(folder)
    return folder


def _read_originals(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of the two cereal files in `folder`, keyed as in ``sfm_3448.npz`` (expression names checked)."""
    arrays = read_cereal_shape_model(folder / "sfm_shape_3448.bin")
    names, arrays["expressions"] = read_cereal_blendshapes(folder / "expression_blendshapes_3448.bin")
    if tuple(names) != EXPRESSION_NAMES:
        raise SFMError(f"{folder}: expression blendshapes are {names}, expected {list(EXPRESSION_NAMES)}")
    arrays["expression_names"] = np.array(names)
    return arrays


def convert_sfm(src: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``sfm_3448.npz`` from the two original eos files in `src` into `out` (default `src`), and copy
    the originals (and ``sfm_reference_symmetry.txt`` when `src` has it) beside it: `out` then holds what the
    generator and the tests read.

    The npz stores the arrays as eos holds them (the basis column-major, triangles int32, the expression
    names as strings) with ``np.savez_compressed``: from the published files its members are byte for byte
    those of the project's reference ``sfm_3448.npz`` (and with the reference zlib, so is the whole file).

    Returns:
        The path of the npz.

    Raises:
        SFMError: `src` lacks one of the two files, or they do not parse.
    """
    src = Path(src).expanduser()
    out = Path(out).expanduser() if out is not None else src
    if not _has_originals(src):
        missing = [name for name in SFM_FILES if not (src / name).is_file()]
        raise SFMError(f"{src} lacks {', '.join(missing)}: download them from {_EOS_RAW} (see docs/data.md)")
    arrays = _read_originals(src)
    order = ("mean", "basis", "eigenvalues", "triangles", "texcoords", "expression_names", "expressions")
    arrays = {key: arrays[key] for key in order}
    arrays["basis"] = np.asfortranarray(arrays["basis"])  # column-major, as cereal stores Eigen matrices
    arrays["triangles"] = arrays["triangles"].astype(np.int32)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SFM_FILES, SYMMETRY_FILE):
        if (src / name).is_file() and (src / name).resolve() != (out / name).resolve():
            shutil.copyfile(src / name, out / name)
    write_atomically(out / SFM_NPZ, lambda f: np.savez_compressed(f, **arrays))
    return out / SFM_NPZ


def blend(weights: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """``sum_k weights[k] * shapes[k]``: (K,) weights x (K, ...) shapes -> (...), summed in one order whatever
    the thread count. `np.tensordot` hands this sum to BLAS, whose result depends on how many threads share it:
    an ICT FaceKit face generated on two threads differed from one generated on one in its last bits, and now and
    then that tipped the face's normalisation, so a training cache's pixels depended on the machine."""
    return np.einsum("k,k...->...", weights, shapes)


def write_atomically(target: Path, write) -> None:
    """`write(file)` into a temporary file beside `target`, then rename it into place, so that an interrupted
    download or conversion never looks like a model file (and the file gets the umask's permissions)."""
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as f:
            write(f)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _fetch(url: str, target: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            write_atomically(target, lambda f: shutil.copyfileobj(response, f))
    except (urllib.error.URLError, OSError) as err:
        raise SFMError(
            f"could not download {url} ({err}). Are you offline? Download the eos files {sorted(SFM_FILES)} by "
            "hand into a folder, convert them with `python -m affectvlm.data sfm-convert FOLDER` and set "
            "AFFECTVLM_SFM_DIR to it (docs/data.md)."
        ) from err


# --- cereal binary archive reader ---------------------------------------------------------------------
# cereal's BinaryInputArchive writes little-endian raw values with no padding: containers as a uint64 size
# then their items, strings as a uint64 length then bytes, a uint32 class version the first time a versioned
# class (eos MorphableModel) appears, and eos's Eigen matrices as int32 rows, int32 cols, then the
# column-major scalars.


class _Reader:
    def __init__(self, buf: bytes, name: str):
        self.buf, self.pos, self.name = buf, 0, name

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise SFMError(f"{self.name}: truncated at byte {self.pos} (wanted {size} more)")
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.pos + size > len(self.buf):
            raise SFMError(f"{self.name}: array of {count} x {dtype} at byte {self.pos} runs past the end")
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return out

    def eigen(self, dtype: str = "<f4") -> np.ndarray:
        rows, cols = self.take("<ii")
        # column-major -> (rows, cols)
        return self.array(dtype, rows * cols).reshape(cols, rows).T

    def string(self) -> str:
        n = self.take("<Q")
        return self.array("u1", n).tobytes().decode("utf-8")


def _read_pca(r: _Reader) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean, basis, eigenvalues = r.eigen(), r.eigen(), r.eigen()
    n = r.take("<Q")
    triangles = r.array("<i4", 3 * n).reshape(n, 3)
    return mean[:, 0], basis, eigenvalues[:, 0], triangles


def read_cereal_shape_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read eos's ``sfm_shape_3448.bin`` (MorphableModel, class version 1: shape model, empty colour model,
    texture coordinates).

    Returns:
        dict with mean (N, 3) float32, basis (3N, K) float32, eigenvalues (K,) float32, triangles (M, 3) int64,
        texcoords (N, 2) float32.
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), path.name)
    version = r.take("<I")
    if version != 1:
        raise SFMError(f"{path.name}: MorphableModel version {version}; this reader knows version 1")
    mean, basis, eigenvalues, triangles = _read_pca(r)
    _read_pca(r)  # colour model: empty in the shape-only SFM
    n = r.take("<Q")
    texcoords = r.array("<f8", 2 * n).reshape(n, 2)
    if r.pos != len(r.buf):
        raise SFMError(f"{path.name}: {len(r.buf) - r.pos} unexpected trailing bytes")
    if basis.shape[0] != mean.shape[0] or mean.shape[0] % 3:
        raise SFMError(f"{path.name}: mean {mean.shape} and basis {basis.shape} disagree")
    return {
        "mean": mean.reshape(-1, 3).astype(np.float32),
        "basis": np.ascontiguousarray(basis, dtype=np.float32),
        "eigenvalues": eigenvalues.astype(np.float32),
        "triangles": triangles.astype(np.int64),
        "texcoords": texcoords.astype(np.float32),
    }


def read_cereal_blendshapes(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read eos's ``expression_blendshapes_3448.bin`` (a vector of {name, deformation}).

    Returns:
        (names, deformations (E, N, 3) float32).
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), path.name)
    names, shapes = [], []
    for _ in range(r.take("<Q")):
        names.append(r.string())
        shapes.append(r.eigen()[:, 0].reshape(-1, 3))
    if r.pos != len(r.buf):
        raise SFMError(f"{path.name}: {len(r.buf) - r.pos} unexpected trailing bytes")
    return names, np.stack(shapes).astype(np.float32)


def symmetry_pairs(mean: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Each vertex's mirror counterpart.

    The eos symmetry file covers only the 845 reference vertices (1-based, one per line, the first line ends
    in a comment); the other vertices of the 3,448 model come from subdividing the reference and get their
    nearest neighbour in the x-mirrored mean shape.

    Args:
        mean: (N, 3) mean shape.
        path: the symmetry file, or None to mirror every vertex.

    Returns:
        (N,) int64, 0-based.
    """
    ref = np.zeros(0, np.int64)
    if path is not None and Path(path).is_file():
        lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
        ref = np.array([int(s) for s in lines if s], dtype=np.int64) - 1
        if ref.min(initial=0) < 0 or ref.max(initial=0) >= len(ref) or len(ref) > len(mean):
            raise SFMError(f"{path}: indices out of range for {len(ref)} reference vertices")
        if not np.array_equal(ref[ref], np.arange(len(ref))):
            raise SFMError(f"{path}: the pairs are not symmetric (i -> j but j -/-> i)")
    pairs = np.arange(len(mean), dtype=np.int64)
    pairs[: len(ref)] = ref
    # The remaining vertices are paired by a greedy matching on the mirror distance, so that the map is an
    # involution (pairs[pairs] == identity), which symmetrising a displacement field relies on.
    rest = np.arange(len(ref), len(mean))
    v = mean[rest].astype(np.float64)
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    # (R, R) squared distances, symmetric because mirroring is an isometric involution; ~50 MB for R = 2,603
    d2 = (v**2).sum(1)[:, None] + (mirrored**2).sum(1)[None, :] - 2.0 * v @ mirrored.T
    nn = d2.argmin(1)
    free = np.ones(len(rest), bool)
    mutual = np.flatnonzero(nn[nn] == np.arange(len(rest)))
    pairs[rest[mutual]] = rest[nn[mutual]]
    free[mutual] = False
    left = np.flatnonzero(free)  # the few without a mutual nearest mirror neighbour
    sub = d2[np.ix_(left, left)]
    for flat in np.argsort(sub, axis=None):
        i, j = divmod(int(flat), len(left))
        if free[left[i]] and free[left[j]]:
            pairs[rest[left[i]]], pairs[rest[left[j]]] = rest[left[j]], rest[left[i]]
            free[left[i]] = free[left[j]] = False
    return pairs


@lru_cache(maxsize=4)
def _load(folder: Path) -> SurreyFaceModel:
    npz = folder / SFM_NPZ
    if npz.is_file():
        with np.load(npz) as d:
            arrays = {
                k: d[k] for k in ("mean", "basis", "eigenvalues", "triangles", "texcoords", "expressions")
            }
            names = [str(n) for n in d["expression_names"]]
        if tuple(names) != EXPRESSION_NAMES:
            raise SFMError(f"{npz}: expression blendshapes are {names}, expected {list(EXPRESSION_NAMES)}")
    else:
        arrays = _read_originals(folder)
    mean = arrays["mean"].astype(np.float32)
    return SurreyFaceModel(
        mean=mean,
        basis=arrays["basis"].astype(np.float32),
        eigenvalues=arrays["eigenvalues"].astype(np.float32),
        triangles=arrays["triangles"].astype(np.int64),
        texcoords=arrays["texcoords"].astype(np.float32),
        expressions=arrays["expressions"].astype(np.float32),
        symmetry=symmetry_pairs(mean, folder / SYMMETRY_FILE),
        source=folder,
    )


def load_sfm(sfm_dir: str | os.PathLike | None = None, download: bool = True) -> SurreyFaceModel:
    """Load the model (cached per folder), locating or downloading it as :func:`find_sfm_dir` does."""
    return _load(find_sfm_dir(sfm_dir, download=download).resolve())
