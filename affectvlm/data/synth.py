"""SynthFER-3D: synthetic 3D and 4D facial expression scans from the Surrey Face Model.

Each subject is a random SFM identity (standard-normal coefficients scaled by the square roots of the model's
eigenvalues) who shows the six basic emotions at four intensities plus neutral (25 scans, like BU-3DFE) and,
for the 4D task, one 25 fps sequence per emotion (neutral -> onset -> apex -> offset -> neutral, like
BU-4DFE). Every nuisance that makes real data hard is a documented field of :class:`SynthConfig`, with
difficulty presets in :data:`PRESETS` (``easy``, ``medium`` = the defaults, ``hard``).

Everything is deterministic from ``SynthConfig.seed``: each subject, scan and sequence draws from its own
random stream keyed by (seed, kind, subject, emotion, intensity), so any sample can be regenerated alone,
in any order, in any process (which the resumable render cache relies on).

Metadata (gender, age group, ethnicity) is drawn at random and independently of the geometry: it is
synthetic, exists only to exercise the prompt machinery, and carries no information about the face.

The model files are non-commercial (research and teaching only); so are the scans generated from them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .sfm import EXPRESSION_NAMES, SurreyFaceModel, load_sfm

__all__ = [
    "AGE_GROUPS",
    "BU3DFE_CODES",
    "BU4DFE_NAMES",
    "EMOTIONS",
    "ETHNICITIES",
    "PRESETS",
    "SynthConfig",
    "SynthFER3D",
    "SynthSequence",
    "SynthSubject",
    "SynthScan",
    "TREE_LAYOUTS",
    "range_grid",
    "write_synth_tree",
]

# The six basic emotions in the SFM blendshape order, which every label index in this package follows.
EMOTIONS = EXPRESSION_NAMES
BU3DFE_CODES = {"anger": "AN", "disgust": "DI", "fear": "FE", "happiness": "HA", "sadness": "SA", "surprise": "SU", "neutral": "NE"}
BU4DFE_NAMES = {"anger": "Angry", "disgust": "Disgust", "fear": "Fear", "happiness": "Happy", "sadness": "Sad", "surprise": "Surprise"}
BOSPHORUS_CODES = {"anger": "ANGER", "disgust": "DISGUST", "fear": "FEAR", "happiness": "HAPPY", "sadness": "SADNESS", "surprise": "SURPRISE"}
# BU-3DFE ethnicity codes, with roughly that dataset's proportions (synthetic: independent of the geometry)
ETHNICITIES = {"WH": 0.51, "AE": 0.24, "BL": 0.09, "LA": 0.08, "IN": 0.06, "AM": 0.02}
AGE_GROUPS = ("18-29", "30-39", "40-49", "50-70")
_AGE_P = (0.55, 0.25, 0.12, 0.08)
_FEMALE_P = 0.56  # BU-3DFE: 56 female, 44 male

_HEAD_CENTRE = np.array([0.0, 0.0, -90.0], np.float32)  # rotate about the middle of the head, not the nose
_KIND_SUBJECT, _KIND_SCAN, _KIND_SEQUENCE = 0, 1, 2


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of SynthFER-3D. Lengths are millimetres, angles degrees, times seconds.

    Standard deviations are of normal draws; ``(lo, hi)`` pairs are uniform ranges.
    """

    seed: int = 0
    """Master seed: the same config gives the same data, sample by sample."""
    num_subjects: int = 100
    """Subjects (BU-3DFE has 100, BU-4DFE 101)."""
    intensity_levels: tuple[float, ...] = (0.3, 0.55, 0.8, 1.0)
    """Blendshape weight of each intensity level 1..4 (BU-3DFE codes 01-04)."""
    identity_scale: float = 1.0
    """Multiplies the identity coefficients' standard deviation (1 = the model's own variance)."""

    # --- expression style -------------------------------------------------------------------------------
    style_mix: float = 0.15
    """Per subject and emotion, each other emotion is mixed in with a weight ~ U(0, style_mix)."""
    confusable_pairs: tuple[tuple[str, str], ...] = (("fear", "surprise"), ("anger", "disgust"), ("sadness", "anger"))
    """Pairs that subjects confuse, as fear and surprise are confused in real data."""
    confusion: float = 0.3
    """Extra mixing within a confusable pair (both directions), weight ~ U(0, confusion)."""
    expressiveness: float = 0.25
    """Std of the log of each subject's per-emotion gain (some people smile broadly, others barely)."""
    neutral_leak: float = 0.05
    """Std of the small random expression weights of a neutral face (nobody is perfectly relaxed)."""

    # --- asymmetry (uses the model's vertex symmetry pairs) ---------------------------------------------------
    asymmetry: float = 0.2
    """Std of the left/right gain difference of an expression (per subject bias plus per scan draw)."""
    identity_asymmetry: float = 0.5
    """Std of the factor that amplifies (or cancels) a subject's own left/right shape asymmetry."""

    # --- jitter ---------------------------------------------------------------------------------------------
    intensity_jitter: float = 0.15
    """Std of the log multiplicative jitter of the intensity of each scan."""
    pose_jitter: tuple[float, float, float] = (6.0, 4.0, 2.0)
    """Std of head yaw, pitch, roll per scan."""
    translation_jitter: float = 3.0
    """Std of the head translation per scan, per axis."""
    subject_offset: float = 20.0
    """Std of a per-subject offset of the whole scan: real scans are not centred (the pipeline normalises)."""

    # --- scanner ----------------------------------------------------------------------------------------------
    noise: float = 0.2
    """Std of the depth (z, towards the sensor) noise of each vertex."""
    outlier_fraction: float = 0.002
    """Fraction of vertices with a spike of depth error."""
    outlier_scale: float = 2.5
    """Std of those spikes."""
    holes_per_scan: float = 1.0
    """Mean (Poisson) number of small holes (eyebrows, eyes, nostrils lose data)."""
    hole_radius: tuple[float, float] = (3.0, 9.0)
    """Radius of a hole."""
    missing_patch_prob: float = 0.15
    """Probability of a large missing patch at the side of the face (grazing angles lose data)."""
    patch_radius: tuple[float, float] = (15.0, 30.0)
    """Radius of that patch."""
    subdivision_prob: float = 0.5
    """Mesh density variation: probability that a scan is midpoint-subdivided once (3,448 -> 13,6xx
    vertices) before noise is added, so density and noise grain vary between scans."""
    crop_radius: tuple[float, float] = (80.0, 110.0)
    """Crop variation: the scan keeps the vertices within this radius of the (offset) nose tip."""
    crop_offset: float = 6.0
    """Std of the crop centre's offset from the nose tip, per axis (x, y)."""

    # --- 4D -------------------------------------------------------------------------------------------------
    fps: float = 25.0
    """Frames per second of a sequence."""
    phase_seconds: tuple[tuple[float, float], ...] = ((0.3, 0.8), (0.5, 1.0), (0.8, 1.6), (0.5, 1.0), (0.3, 0.8))
    """Duration ranges of neutral, onset, apex, offset, neutral (at tempo 1): about 4 s per sequence."""
    tempo_jitter: float = 0.2
    """Std of the log of each subject's tempo (multiplies every phase: slow and fast expressers)."""
    apex_intensity: tuple[float, float] = (0.75, 1.0)
    """Blendshape weight at the apex."""
    head_motion: float = 1.5
    """Amplitude of the smooth head rotation during a sequence (degrees); translation is the same in mm."""

    def __post_init__(self) -> None:
        if self.num_subjects < 1:
            raise ValueError(f"num_subjects must be >= 1, got {self.num_subjects}")
        if not self.intensity_levels or any(not 0 < w <= 2 for w in self.intensity_levels):
            raise ValueError(f"intensity_levels must be in (0, 2], got {self.intensity_levels}")
        for a, b in self.confusable_pairs:
            if a not in EMOTIONS or b not in EMOTIONS or a == b:
                raise ValueError(f"confusable pair ({a!r}, {b!r}): need two different names of {EMOTIONS}")
        for name in ("hole_radius", "patch_radius", "crop_radius", "apex_intensity"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        if len(self.phase_seconds) != 5 or any(not 0 <= lo <= hi for lo, hi in self.phase_seconds):
            raise ValueError(f"phase_seconds must be five (lo, hi) ranges, got {self.phase_seconds}")
        for name in (
            "identity_scale", "style_mix", "confusion", "expressiveness", "neutral_leak", "asymmetry",
            "identity_asymmetry", "intensity_jitter", "translation_jitter", "subject_offset", "noise",
            "outlier_scale", "holes_per_scan", "tempo_jitter", "head_motion", "crop_offset",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("outlier_fraction", "missing_patch_prob", "subdivision_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.fps <= 0 or len(self.pose_jitter) != 3:
            raise ValueError("fps must be > 0 and pose_jitter three stds (yaw, pitch, roll)")

    @classmethod
    def preset(cls, name: str, **overrides) -> SynthConfig:
        """A difficulty preset (``easy``, ``medium``, ``hard``) with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def replace(self, **changes) -> SynthConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Difficulty presets: field overrides of the defaults ("medium" is the defaults).
PRESETS: dict[str, dict] = {
    "easy": dict(
        style_mix=0.03, confusion=0.05, expressiveness=0.1, neutral_leak=0.02, asymmetry=0.05,
        identity_asymmetry=0.2, intensity_jitter=0.05, pose_jitter=(2.0, 2.0, 1.0), translation_jitter=1.0,
        noise=0.05, outlier_fraction=0.0, holes_per_scan=0.0, missing_patch_prob=0.0, subdivision_prob=0.0,
        crop_radius=(100.0, 100.0), crop_offset=0.0, tempo_jitter=0.1, head_motion=0.5,
    ),
    "medium": {},
    "hard": dict(
        style_mix=0.25, confusion=0.5, expressiveness=0.4, neutral_leak=0.1, asymmetry=0.35,
        identity_asymmetry=0.8, intensity_jitter=0.25, pose_jitter=(12.0, 8.0, 4.0), translation_jitter=5.0,
        noise=0.4, outlier_fraction=0.005, holes_per_scan=2.5, missing_patch_prob=0.35,
        subdivision_prob=0.5, crop_radius=(70.0, 115.0), crop_offset=10.0, tempo_jitter=0.35, head_motion=3.0,
    ),
}


@dataclass(frozen=True)
class SynthSubject:
    """One synthetic person: identity, expression style and (synthetic) metadata.

    Attributes:
        index: 0-based subject number.
        subject_id: BU-3DFE-style id (``F0001`` / ``M0001``, numbered per gender); ``bu4dfe_id`` is the
            BU-4DFE form (``F001``).
        gender, age_group, ethnicity: random and independent of the geometry (see module docstring).
        coefficients: (K,) standard-normal identity coefficients.
        style: (6, 6) float32: row k = blendshape weights of emotion k at intensity 1.
        asymmetry_bias: the subject's habitual left/right expression gain difference.
        shape_asymmetry: factor on the subject's own shape asymmetry.
        tempo: multiplies every 4D phase duration.
        offset: (3,) per-subject position of the scan (mm).
        skin: (3,) uint8 RGB skin tone of the vertex colours.
    """

    index: int
    subject_id: str
    bu4dfe_id: str
    gender: str
    age_group: str
    ethnicity: str
    coefficients: np.ndarray = field(repr=False)
    style: np.ndarray = field(repr=False)
    asymmetry_bias: float = 0.0
    shape_asymmetry: float = 0.0
    tempo: float = 1.0
    offset: np.ndarray = field(default=None, repr=False)
    skin: np.ndarray = field(default=None, repr=False)

    @property
    def metadata(self) -> dict:
        """Synthetic metadata for prompts: gender (``female``/``male``), age group, ethnicity code."""
        return {
            "gender": self.gender,
            "age_group": self.age_group,
            "ethnicity": self.ethnicity,
            "synthetic_metadata": True,
        }


@dataclass(eq=False)
class SynthScan:
    """One generated static scan (or one 4D frame).

    Attributes:
        vertices: (N, 3) float32 mm. faces: (M, 3) int64. colors: (N, 3) uint8. uv: (N, 2) float32.
        subject: its subject. label: an emotion of `EMOTIONS` or ``"neutral"``. intensity: 1-4, 0 for neutral.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uv: np.ndarray
    subject: SynthSubject
    label: str
    intensity: int

    def to_scan(self, path: str | None = None):
        """As an :class:`affectvlm.scan.Scan`."""
        from ..scan.types import Scan

        return Scan(vertices=self.vertices, faces=self.faces, colors=self.colors, uv=self.uv, path=path)


@dataclass(eq=False)
class SynthSequence:
    """One generated 4D sequence.

    Attributes:
        frames: (T, N, 3) float32 vertices of every frame (shared topology). faces: (M, 3) int64.
        colors: (N, 3) uint8. uv: (N, 2) float32.
        weights: (T,) expression weight of each frame (0 neutral ... apex).
        phases: frame index where onset, apex, offset and the final neutral start.
        frame_indices: (T,) which frames of the full sequence these are (all unless subsampled).
        num_frames_total: length of the full sequence.
    """

    frames: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uv: np.ndarray
    subject: SynthSubject
    label: str
    weights: np.ndarray
    phases: dict
    frame_indices: np.ndarray
    num_frames_total: int
    fps: float = 25.0

    def to_scans(self, path_prefix: str | None = None) -> list:
        """The frames as a list of :class:`affectvlm.scan.Scan`."""
        from ..scan.types import Scan

        return [
            Scan(vertices=v, faces=self.faces, colors=self.colors, uv=self.uv, path=path_prefix and f"{path_prefix}/{i:03d}")
            for i, v in zip(self.frame_indices, self.frames)
        ]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation: roll about z, then pitch about x, then yaw about y (degrees)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (ry @ rx @ rz).astype(np.float32)


def _rotations(angles: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll in degrees -> (T, 3, 3)."""
    return np.stack([_rotation(*a) for a in angles]) if len(angles) else np.zeros((0, 3, 3), np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class SynthFER3D:
    """The SynthFER-3D generator.

    Args:
        config: the parameters (default: the ``medium`` preset).
        sfm: a loaded :class:`SurreyFaceModel`, or None to :func:`load_sfm` (``$AFFECTVLM_SFM_DIR`` ...).

    Example:
        >>> gen = SynthFER3D(SynthConfig(seed=1, num_subjects=10))
        >>> scan = gen.scan(0, "happiness", 4)            # SynthScan, vertices (N, 3)
        >>> seq = gen.sequence(0, "surprise", num_frames=16)  # SynthSequence, frames (16, N, 3)
    """

    def __init__(self, config: SynthConfig | None = None, sfm: SurreyFaceModel | None = None):
        self.config = config or SynthConfig()
        self.sfm = sfm if sfm is not None else load_sfm()
        self._subjects: dict[int, SynthSubject] = {}
        self._shapes: dict[int, np.ndarray] = {}

    # --- model-derived constants --------------------------------------------------------------------------

    @cached_property
    def nose_index(self) -> int:
        return int(np.argmax(self.sfm.mean[:, 2]))

    @cached_property
    def _side(self) -> np.ndarray:
        """(N,) in [-1, 1]: which side of the face each vertex is on (smooth across the midline)."""
        return np.tanh(self.sfm.mean[:, 0] / 20.0).astype(np.float32)

    @cached_property
    def _subdivision(self) -> tuple[np.ndarray, np.ndarray]:
        """Midpoint subdivision of the model topology, computed once: edges (E, 2) whose midpoints become
        new vertices N..N+E-1, and the (4M, 3) faces."""
        tri = self.sfm.triangles
        n = self.sfm.num_vertices
        corners = np.stack([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], axis=1)  # (M, 3, 2)
        edges, inverse = np.unique(np.sort(corners.reshape(-1, 2), axis=1), axis=0, return_inverse=True)
        mid = inverse.reshape(-1, 3) + n  # (M, 3): vertex of the midpoint of edges 01, 12, 20
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
        faces = np.concatenate(
            [np.stack(f, axis=1) for f in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))]
        )
        return edges, faces.astype(np.int64)

    def _mirror(self, v: np.ndarray) -> np.ndarray:
        """(..., N, 3) -> the same shape mirrored left/right through the symmetry pairs."""
        return v[..., self.sfm.symmetry, :] * np.array([-1.0, 1.0, 1.0], np.float32)

    # --- subjects -------------------------------------------------------------------------------------------

    @property
    def num_subjects(self) -> int:
        return self.config.num_subjects

    def subject(self, index: int) -> SynthSubject:
        """Subject `index` (0-based), drawn from its own random stream."""
        if not 0 <= index < self.config.num_subjects:
            raise IndexError(f"subject {index} out of range [0, {self.config.num_subjects})")
        if index not in self._subjects:
            self._subjects[index] = self._draw_subject(index)
        return self._subjects[index]

    @property
    def subjects(self) -> list[SynthSubject]:
        return [self.subject(i) for i in range(self.config.num_subjects)]

    def _draw_subject(self, index: int) -> SynthSubject:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _KIND_SUBJECT, index])
        k = len(self.sfm.eigenvalues)
        coefficients = rng.standard_normal(k).astype(np.float32) * cfg.identity_scale
        # Expression style: identity + a little of every other emotion + more of the confusable partner;
        # each emotion's row scaled by the subject's expressiveness for it.
        style = np.eye(6, dtype=np.float32) + rng.uniform(0, cfg.style_mix, (6, 6)).astype(np.float32) * (1 - np.eye(6, dtype=np.float32))
        for a, b in cfg.confusable_pairs:
            i, j = EMOTIONS.index(a), EMOTIONS.index(b)
            style[i, j] += rng.uniform(0, cfg.confusion)
            style[j, i] += rng.uniform(0, cfg.confusion)
        style *= np.exp(rng.normal(0, cfg.expressiveness, (6, 1))).astype(np.float32)
        # Metadata: drawn from a separate stream so that it is independent of the geometry by construction.
        meta = np.random.default_rng([cfg.seed, _KIND_SUBJECT, index, 1])
        female = meta.random() < _FEMALE_P
        ethnicity = str(meta.choice(list(ETHNICITIES), p=np.array(list(ETHNICITIES.values())) / sum(ETHNICITIES.values())))
        age = str(meta.choice(AGE_GROUPS, p=_AGE_P))
        # Ids numbered per gender in subject order, as BU-3DFE numbers F0001.. and M0001..
        number = 1 + sum(self._is_female(i) == female for i in range(index))
        prefix = "F" if female else "M"
        return SynthSubject(
            index=index,
            subject_id=f"{prefix}{number:04d}",
            bu4dfe_id=f"{prefix}{number:03d}",
            gender="female" if female else "male",
            age_group=age,
            ethnicity=ethnicity,
            coefficients=coefficients,
            style=style,
            asymmetry_bias=float(rng.normal(0, cfg.asymmetry)),
            shape_asymmetry=float(rng.normal(0, cfg.identity_asymmetry)),
            tempo=float(np.exp(rng.normal(0, cfg.tempo_jitter))),
            offset=rng.normal(0, cfg.subject_offset, 3).astype(np.float32),
            skin=np.clip(rng.normal([200, 160, 140], [30, 30, 30]), 40, 255).astype(np.uint8),
        )

    def _is_female(self, index: int) -> bool:
        return np.random.default_rng([self.config.seed, _KIND_SUBJECT, index, 1]).random() < _FEMALE_P

    def identity_shape(self, index: int) -> np.ndarray:
        """(N, 3) float32 neutral shape of subject `index`, with its shape asymmetry applied."""
        if index not in self._shapes:
            s = self.subject(index)
            shape = self.sfm.identity(s.coefficients)
            # symmetric part + (1 + a) * antisymmetric part: a < -1 flips, a = -1 makes the face symmetric
            anti = 0.5 * (shape - self._mirror(shape))
            self._shapes[index] = (shape + s.shape_asymmetry * anti).astype(np.float32)
        return self._shapes[index]

    # --- expressions ----------------------------------------------------------------------------------------

    def expression_weights(self, subject: SynthSubject, label: str, strength: float, rng: np.random.Generator) -> np.ndarray:
        """(6,) blendshape weights of `label` at `strength` (0 for neutral) for `subject`."""
        if label == "neutral":
            return rng.normal(0, self.config.neutral_leak, 6).astype(np.float32)
        if label not in EMOTIONS:
            raise ValueError(f"label {label!r} is not 'neutral' or one of {EMOTIONS}")
        return (subject.style[EMOTIONS.index(label)] * strength).astype(np.float32)

    def _displacement(self, weights: np.ndarray, asymmetry: float) -> np.ndarray:
        """(6,) weights -> (N, 3) displacement, symmetrised through the vertex pairs and then given a
        left/right gain difference, so that asymmetry is controlled rather than inherited from the
        blendshapes."""
        d = np.tensordot(weights, self.sfm.expressions, axes=1)  # (6,) x (6, N, 3) -> (N, 3)
        d = 0.5 * (d + self._mirror(d))
        return d * (1.0 + asymmetry * self._side)[:, None]

    # --- nuisances ------------------------------------------------------------------------------------------

    def _topology(self, rng: np.random.Generator) -> tuple[bool, np.ndarray]:
        subdivide = rng.random() < self.config.subdivision_prob
        return subdivide, (self._subdivision[1] if subdivide else self.sfm.triangles)

    def _densify(self, v: np.ndarray, subdivide: bool) -> np.ndarray:
        """(..., N, 3) -> (..., N + E, 3) when subdividing (edge midpoints appended)."""
        if not subdivide:
            return v
        edges = self._subdivision[0]
        mid = 0.5 * (v[..., edges[:, 0], :] + v[..., edges[:, 1], :])
        return np.concatenate([v, mid], axis=-2)

    def _keep_mask(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) bool: the crop (a sphere about the jittered nose tip) minus holes and a missing patch,
        decided in head coordinates (before pose) on the vertices `v` (N, 3)."""
        cfg = self.config
        nose = v[self.nose_index].copy()
        nose[:2] += rng.normal(0, cfg.crop_offset, 2)
        radius = rng.uniform(*cfg.crop_radius)
        keep = ((v - nose) ** 2).sum(1) <= radius * radius
        candidates = np.flatnonzero(keep)
        for _ in range(rng.poisson(cfg.holes_per_scan)):
            centre = v[rng.choice(candidates)]
            keep &= ((v - centre) ** 2).sum(1) > rng.uniform(*cfg.hole_radius) ** 2
        if rng.random() < cfg.missing_patch_prob:
            side = candidates[np.abs(v[candidates, 0] - nose[0]) > 40.0]
            if len(side):
                centre = v[rng.choice(side)]
                keep &= ((v - centre) ** 2).sum(1) > rng.uniform(*cfg.patch_radius) ** 2
        return keep

    def _scanner_noise(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Depth noise along z (the sensor direction) plus rare spikes, on (..., N, 3)."""
        cfg = self.config
        z = rng.normal(0, cfg.noise, v.shape[:-1]).astype(np.float32)
        spikes = rng.random(v.shape[:-1]) < cfg.outlier_fraction
        z += spikes * rng.normal(0, cfg.outlier_scale, v.shape[:-1]).astype(np.float32)
        out = v.copy()
        out[..., 2] += z
        return out

    def _colors(self, subject: SynthSubject, n: int, rng: np.random.Generator) -> np.ndarray:
        tone = subject.skin.astype(np.float32) + rng.normal(0, 6, (n, 3)).astype(np.float32)
        return np.clip(tone, 0, 255).astype(np.uint8)

    def _uv(self, subdivide: bool) -> np.ndarray:
        return self._densify(self.sfm.texcoords, subdivide)  # (N, 2): midpoints interpolate uv too

    # --- samples --------------------------------------------------------------------------------------------

    def scan(self, subject: int, label: str, intensity: int = 4) -> SynthScan:
        """One static scan, BU-3DFE style.

        Args:
            subject: 0-based subject index.
            label: ``"neutral"`` or an emotion of `EMOTIONS`.
            intensity: 1..len(intensity_levels) (ignored, and reported as 0, for neutral).

        Returns:
            A :class:`SynthScan`: vertices (N, 3) float32 mm, faces (M, 3) int64, colors, uv.
        """
        cfg = self.config
        if label != "neutral" and not 1 <= intensity <= len(cfg.intensity_levels):
            raise ValueError(f"intensity must be in 1..{len(cfg.intensity_levels)}, got {intensity}")
        if label != "neutral" and label not in EMOTIONS:
            raise ValueError(f"label {label!r} is not 'neutral' or one of {EMOTIONS}")
        intensity = 0 if label == "neutral" else int(intensity)
        label_number = 0 if label == "neutral" else 1 + EMOTIONS.index(label)
        rng = np.random.default_rng([cfg.seed, _KIND_SCAN, subject, label_number, intensity])
        s = self.subject(subject)
        strength = 0.0 if intensity == 0 else cfg.intensity_levels[intensity - 1] * math.exp(rng.normal(0, cfg.intensity_jitter))
        weights = self.expression_weights(s, label, strength, rng)
        v = self.identity_shape(subject) + self._displacement(weights, s.asymmetry_bias + rng.normal(0, cfg.asymmetry))
        subdivide, faces = self._topology(rng)
        v = self._densify(v, subdivide)
        keep = self._keep_mask(v, rng)
        rot = _rotation(*(rng.normal(0, cfg.pose_jitter)))
        v = (v - _HEAD_CENTRE) @ rot.T + _HEAD_CENTRE + s.offset + rng.normal(0, cfg.translation_jitter, 3).astype(np.float32)
        v = self._scanner_noise(v.astype(np.float32), rng)
        colors = self._colors(s, len(v), rng)
        v, faces, colors, uv = _subset(keep, v, faces, colors, self._uv(subdivide))
        return SynthScan(vertices=v, faces=faces, colors=colors, uv=uv, subject=s, label=label, intensity=intensity)

    def sequence_timing(self, subject: int, label: str) -> tuple[np.ndarray, dict]:
        """The expression weight of every frame of a sequence and its phase boundaries.

        Returns:
            (weights (T,) float32, phases {"onset", "apex", "offset", "neutral", "frames"} frame indices).
        """
        cfg = self.config
        rng = self._sequence_rng(subject, label, 0)
        s = self.subject(subject)
        seconds = np.array([rng.uniform(lo, hi) for lo, hi in cfg.phase_seconds]) * s.tempo
        bounds = np.round(np.cumsum(seconds) * cfg.fps).astype(int)  # end frame of each phase
        bounds = np.maximum.accumulate(np.maximum(bounds, np.arange(1, 6)))
        t = np.arange(bounds[-1])
        apex = rng.uniform(*cfg.apex_intensity)
        onset = _smoothstep((t - bounds[0]) / max(bounds[1] - bounds[0], 1))
        offset = 1.0 - _smoothstep((t - bounds[2]) / max(bounds[3] - bounds[2], 1))
        tremor = 1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t / cfg.fps + rng.uniform(0, 2 * np.pi))
        weights = (apex * np.minimum(onset, offset) * tremor).astype(np.float32)
        phases = {"onset": int(bounds[0]), "apex": int(bounds[1]), "offset": int(bounds[2]), "neutral": int(bounds[3]), "frames": int(bounds[4])}
        return weights, phases

    def _sequence_rng(self, subject: int, label: str, stream: int) -> np.random.Generator:
        if label not in EMOTIONS:
            raise ValueError(f"a sequence label must be one of {EMOTIONS}, got {label!r}")
        return np.random.default_rng([self.config.seed, _KIND_SEQUENCE, subject, EMOTIONS.index(label), stream])

    def sequence(self, subject: int, label: str, num_frames: int | None = None, frame_indices=None) -> SynthSequence:
        """One 4D sequence, BU-4DFE style: neutral -> onset -> apex -> offset -> neutral at `fps`, with
        subject-specific timing and a small smooth head motion. Topology, crop and holes are fixed for the
        sequence; scanner noise is drawn per frame.

        Args:
            subject: 0-based subject index.
            label: an emotion of `EMOTIONS`.
            num_frames: generate only this many frames evenly spread over the sequence (for dynamic
                images: rendering every frame is not needed), or None for all.
            frame_indices: explicit frame indices instead (overrides `num_frames`).

        Returns:
            A :class:`SynthSequence` with frames (T, N, 3).
        """
        cfg = self.config
        weights_all, phases = self.sequence_timing(subject, label)
        total = len(weights_all)
        if frame_indices is None and (num_frames is None or num_frames >= total):
            frame_indices = np.arange(total)
        elif frame_indices is None:
            frame_indices = np.round(np.linspace(0, total - 1, num_frames)).astype(int)
        frame_indices = np.asarray(frame_indices, dtype=int)
        if len(frame_indices) and (frame_indices.min() < 0 or frame_indices.max() >= total):
            raise IndexError(f"frame indices out of range [0, {total})")
        rng = self._sequence_rng(subject, label, 1)
        s = self.subject(subject)
        d = self._displacement(self.expression_weights(s, label, 1.0, rng), s.asymmetry_bias + rng.normal(0, cfg.asymmetry))
        shape = self.identity_shape(subject)
        subdivide, faces = self._topology(rng)
        keep = self._keep_mask(self._densify(shape, subdivide), rng)
        # Head motion: a base pose plus a sum of two slow sinusoids per angle/axis over the whole sequence
        # (evaluated at the chosen frames, so subsampling does not change the motion).
        t = np.arange(total)[:, None] / cfg.fps
        freq, phase = rng.uniform(0.1, 0.6, (2, 6)), rng.uniform(0, 2 * np.pi, (2, 6))
        motion = cfg.head_motion * 0.5 * (np.sin(2 * np.pi * freq[0] * t + phase[0]) + np.sin(2 * np.pi * freq[1] * t + phase[1]))
        base = rng.normal(0, cfg.pose_jitter)
        shift = s.offset + rng.normal(0, cfg.translation_jitter, 3).astype(np.float32)
        frames = shape[None] + weights_all[frame_indices, None, None] * d[None]  # (T, N, 3)
        frames = self._densify(frames, subdivide)
        rots = _rotations(base + motion[frame_indices, :3])  # (T, 3, 3)
        frames = np.einsum("tnj,tij->tni", frames - _HEAD_CENTRE, rots) + _HEAD_CENTRE + shift + motion[frame_indices, None, 3:]
        # per-frame noise from per-frame streams, so a frame's noise does not depend on which frames are drawn
        frames = frames.astype(np.float32)
        for k, i in enumerate(frame_indices):
            frames[k] = self._scanner_noise(frames[k], self._sequence_rng(subject, label, 100 + int(i)))
        colors = self._colors(s, frames.shape[1], rng)
        frames, faces, colors, uv = _subset(keep, frames, faces, colors, self._uv(subdivide))
        return SynthSequence(
            frames=frames.astype(np.float32), faces=faces, colors=colors, uv=uv, subject=s, label=label,
            weights=weights_all[frame_indices], phases=phases, frame_indices=frame_indices,
            num_frames_total=total, fps=cfg.fps,
        )

    # --- listings -------------------------------------------------------------------------------------------

    def static_items(self) -> list[dict]:
        """Every static scan as a dict (subject index, subject_id, label, intensity, metadata): 25 per
        subject, neutral first, BU-3DFE order."""
        items = []
        for i in range(self.config.num_subjects):
            s = self.subject(i)
            items.append(_item(s, "neutral", 0))
            for label in EMOTIONS:
                for level in range(1, len(self.config.intensity_levels) + 1):
                    items.append(_item(s, label, level))
        return items

    def sequence_items(self) -> list[dict]:
        """Every 4D sequence as a dict: 6 per subject."""
        return [_item(self.subject(i), label, None) for i in range(self.config.num_subjects) for label in EMOTIONS]


def _item(s: SynthSubject, label: str, intensity: int | None) -> dict:
    return {"subject_index": s.index, "subject": s.subject_id, "label": label, "intensity": intensity, **s.metadata}


def _subset(keep: np.ndarray, v: np.ndarray, faces: np.ndarray, colors: np.ndarray, uv: np.ndarray):
    """Drop the vertices not in `keep` (N,) and the faces touching them; v may be (N, 3) or (T, N, 3)."""
    remap = np.cumsum(keep) - 1
    f = faces[keep[faces].all(axis=1)]
    return np.ascontiguousarray(v[..., keep, :]), remap[f].astype(np.int64), colors[keep], uv[keep]


def synth_root_readme(config: SynthConfig) -> str:
    """The README written at the root of every generated tree (licence and synthetic-metadata notice)."""
    return (
        "SynthFER-3D: synthetic 3D/4D facial expression scans generated by AffectVLM from the Surrey Face Model.\n"
        "The face model is free for non-commercial use only (research and teaching); so are these files.\n"
        "Gender, age group and ethnicity are drawn at random and independently of the geometry: they are\n"
        "synthetic and carry no information about the faces.\n"
        f"Config: {config.to_dict()}\n"
    )


# --- writing dataset-shaped trees -------------------------------------------------------------------------

TREE_LAYOUTS = ("bu3dfe", "bu4dfe", "bosphorus", "bp4d")
# BP4D tasks that elicit one of the six emotions (the default map of affectvlm.data.datasets.BP4D_TASKS)
_BP4D_TASK_OF = {"happiness": "T1", "sadness": "T2", "surprise": "T3", "fear": "T5", "anger": "T7", "disgust": "T8"}


def range_grid(vertices: np.ndarray, faces: np.ndarray, spacing: float = 1.0, margin: int = 2) -> dict:
    """Rasterise a mesh into an orthographic range grid seen along -z (a structured-light scanner's view).

    Args:
        vertices: (N, 3) float mm. faces: (M, 3) int.
        spacing: grid step in mm.

    Returns:
        dict with x, y (nrows, ncols) grid coordinates, z (nrows, ncols) with NaN where no surface, and
        row 0 at the lowest y (the chin), as Bosphorus stores it.
    """
    v = np.asarray(vertices, np.float64)
    lo = v[:, :2].min(0) - margin * spacing
    ncols, nrows = (np.ceil((v[:, :2].max(0) + margin * spacing - lo) / spacing).astype(int) + 1).tolist()
    depth = np.full(nrows * ncols, -np.inf)
    p = (v[:, :2] - lo) / spacing  # grid units; pixel (r, c) centre at (c, r)
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    za, zb, zc = v[faces[:, 0], 2], v[faces[:, 1], 2], v[faces[:, 2], 2]
    tri = np.stack([a, b, c], 1)
    c0 = np.ceil(tri.min(1)).astype(int)  # (M, 2) first pixel column/row inside the bounding box
    extent = np.floor(tri.max(1)).astype(int) - c0 + 1
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.abs(area) > 1e-12
    # Loop over offsets inside the bounding boxes, vectorised over triangles: the triangles are small
    # (a few grid cells), so a handful of passes covers them all.
    for dy in range(int(extent[:, 1].max(initial=0))):
        for dx in range(int(extent[:, 0].max(initial=0))):
            sel = ok & (extent[:, 0] > dx) & (extent[:, 1] > dy)
            px, py = c0[sel, 0] + dx, c0[sel, 1] + dy
            aa, bb, cc, ar = a[sel], b[sel], c[sel], area[sel]
            w0 = ((bb[:, 0] - px) * (cc[:, 1] - py) - (bb[:, 1] - py) * (cc[:, 0] - px)) / ar
            w1 = ((cc[:, 0] - px) * (aa[:, 1] - py) - (cc[:, 1] - py) * (aa[:, 0] - px)) / ar
            w2 = 1.0 - w0 - w1
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
            z = w0 * za[sel] + w1 * zb[sel] + w2 * zc[sel]
            np.maximum.at(depth, (py * ncols + px)[inside], z[inside])
    depth[~np.isfinite(depth)] = np.nan
    xs = lo[0] + spacing * np.arange(ncols)
    ys = lo[1] + spacing * np.arange(nrows)
    x, y = np.meshgrid(xs, ys)
    return {"x": x, "y": y, "z": depth.reshape(nrows, ncols)}


def _texture(subject: SynthSubject, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8 skin-tone image with mild noise (the trees need a texture file beside each scan)."""
    return np.clip(subject.skin.astype(np.float32) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)


def write_synth_tree(
    out,
    layout: str = "bu3dfe",
    config: SynthConfig | None = None,
    sfm: SurreyFaceModel | None = None,
    subjects=None,
    labels=None,
    intensities=None,
    num_frames: int | None = 12,
    texture_size: int = 32,
    grid_spacing: float = 1.0,
    progress: bool = True,
) -> int:
    """Write SynthFER-3D as files in a real dataset's layout, so that the readers and the whole pipeline
    run end to end on it.

    Layouts:
        ``bu3dfe``: ``<out>/F0001/F0001_AN01WH_F3D.wrl`` (+ ``.bmp`` texture and a ``.bnd`` landmark file),
            25 scans per subject.
        ``bu4dfe``: ``<out>/F001/Angry/000.wrl`` (+ ``.jpg``) frames, six sequences per subject, and a
            ``BU_WrlViewer_V2/`` viewer folder as in the real root.
        ``bosphorus``: ``<out>/bs000/bs000_E_ANGER_0.bnt`` (+ ``.png``, ``.lm3``) range grids: the six emotions
            at the highest intensity and ``N_N_0`` neutral.
        ``bp4d``: ``<out>/F001/T1/0000.obj`` frames for the tasks that elicit the six emotions.

    Args:
        out: the root folder (created).
        subjects: subject indices to write (default all of ``config.num_subjects``).
        labels, intensities: write only these labels (``neutral`` and/or emotions) and BU-3DFE intensities
            (default all; small trees for tests).
        num_frames: frames per 4D sequence (evenly spread; None writes all ~100: large).
        texture_size: side of the texture images written beside the meshes.
        grid_spacing: Bosphorus grid step in mm.

    Returns:
        The number of scan files written.
    """
    from tqdm.auto import tqdm

    from ..scan.bnt import write_bnt
    from ..scan.writers import write_obj, write_texture, write_wrl

    if layout not in TREE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {TREE_LAYOUTS}")
    gen = SynthFER3D(config, sfm)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README_SYNTHFER3D.txt").write_text(synth_root_readme(gen.config))
    subjects = list(range(gen.num_subjects)) if subjects is None else list(subjects)
    if layout in ("bu3dfe", "bosphorus"):
        items = [it for it in gen.static_items() if it["subject_index"] in set(subjects)]
        if layout == "bosphorus":
            top = len(gen.config.intensity_levels)
            items = [it for it in items if it["intensity"] in (0, top)]
    else:
        items = [it for it in gen.sequence_items() if it["subject_index"] in set(subjects)]
        if layout == "bu4dfe":
            (out / "BU_WrlViewer_V2").mkdir(exist_ok=True)
            (out / "BU_WrlViewer_V2" / "readme.txt").write_text("viewer program folder (skipped by the reader)\n")
    items = [it for it in items if labels is None or it["label"] in set(labels)]
    items = [it for it in items if intensities is None or it["intensity"] in (None, 0, *intensities)]
    written = 0
    for it in tqdm(items, desc=f"SynthFER-3D -> {layout}", unit="scan" if layout in ("bu3dfe", "bosphorus") else "seq", disable=not progress):
        s = gen.subject(it["subject_index"])
        rng = np.random.default_rng([gen.config.seed, 9, s.index, EMOTIONS.index(it["label"]) if it["label"] in EMOTIONS else 6])
        texture = _texture(s, texture_size, rng)
        if layout == "bu3dfe":
            scan = gen.scan(s.index, it["label"], it["intensity"] or 1)
            folder = out / s.subject_id
            folder.mkdir(exist_ok=True)
            stem = f"{s.subject_id}_{BU3DFE_CODES[it['label']]}{it['intensity']:02d}{s.ethnicity}"
            mesh = scan.to_scan().replace(texture=texture)
            write_wrl(folder / f"{stem}_F3D.wrl", mesh, texture_name=f"{stem}_F3D.bmp")
            # landmarks beside the scan, as in the real tree (83 "index x y z" lines); the reader skips them
            idx = np.linspace(0, len(scan.vertices) - 1, 83).astype(int)
            np.savetxt(folder / f"{stem}_F3D.bnd", np.column_stack([idx, scan.vertices[idx]]), fmt=["%d", "%.4f", "%.4f", "%.4f"])
            written += 1
        elif layout == "bosphorus":
            scan = gen.scan(s.index, it["label"], it["intensity"] or 1)
            folder = out / f"bs{s.index:03d}"
            folder.mkdir(exist_ok=True)
            stem = f"bs{s.index:03d}_N_N_0" if it["label"] == "neutral" else f"bs{s.index:03d}_E_{BOSPHORUS_CODES[it['label']]}_0"
            g = range_grid(scan.vertices, scan.faces, grid_spacing)
            nrows, ncols = g["z"].shape
            zmin = -1e9
            z = np.where(np.isnan(g["z"]), zmin, g["z"])
            u = np.tile(np.linspace(0, 1, ncols), (nrows, 1))
            v = np.tile(np.linspace(1, 0, nrows)[:, None], (1, ncols))  # row 0 is the chin = bottom of the image
            write_bnt(folder / f"{stem}.bnt", g["x"], g["y"], z, u, v, nrows, ncols, zmin=zmin, image_name=f"{stem}.png")
            write_texture(folder / f"{stem}.png", texture)
            (folder / f"{stem}.lm3").write_text("# 3D Landmark File\r\n\r\n1 landmarks:\r\nNose tip\r\n0 0 0\r\n")
            written += 1
        else:
            seq = gen.sequence(s.index, it["label"], num_frames=num_frames)
            if layout == "bu4dfe":
                folder = out / s.bu4dfe_id / BU4DFE_NAMES[it["label"]]
            else:
                folder = out / s.bu4dfe_id / _BP4D_TASK_OF[it["label"]]
            folder.mkdir(parents=True, exist_ok=True)
            for k, mesh in enumerate(seq.to_scans()):
                if layout == "bu4dfe":
                    write_wrl(folder / f"{k:03d}.wrl", mesh.replace(texture=texture), texture_name=f"{k:03d}.jpg")
                else:
                    write_obj(folder / f"{k:04d}.obj", mesh)
                written += 1
    return written
