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

SynthFER-3D v2 (every addition off by default: the defaults generate exactly what v1 generated):

* ``face_model``: the Surrey Face Model (``sfm``), the ICT FaceKit (``ict``) or ``both``, which gives the
  even-numbered subjects (0, 2, 4, ...) the SFM and the odd-numbered ones the ICT FaceKit. A subject's data
  depends only on (seed, its index, its face model): subject 3 of a ``both`` set is subject 3 of an ``ict``
  set.
* ``expressions``: the SFM's six whole-emotion blendshapes (``blendshapes``, v1) or facial action units
  (``aus``, :mod:`affectvlm.data.aus`: an EMFACS prototype or variant per sample, per-AU intensity, mild
  asymmetry, a few unrelated AUs, blinks). The ICT FaceKit always uses action units. ``sfm_binding`` says how
  an SFM subject renders them: a blend of its six emotion shapes (``blend``) or the ICT FaceKit's AU shapes
  carried onto its vertices through a dense correspondence (``transfer``, :mod:`affectvlm.data.transfer`).
* ``neutral``: a neutral 4D sequence per subject too (the 3D set always has BU-3DFE's neutral scan), making
  neutral a seventh class in both sets; ``compound``: Du et al.'s 15 compound expressions, one scan at the
  top intensity and one sequence per subject each, flagged ``evaluation_only`` (never a training label
  unless a run names them).
* ``realism``: scanner realism (:mod:`affectvlm.data.realism`) applied to every generated scan and frame.

Every sample's metadata (:meth:`SynthFER3D.sample_metadata`) records its face model, the model's licence,
the expression path and, for action units, the AU weights (``aus``: {AU: bilateral mean weight}, and
``au_left``/``au_right`` on the ICT FaceKit), the recipe variant and its code.

Licences: the Surrey Face Model is free for non-commercial use only (research and teaching), and so is
everything generated from it; the ICT FaceKit is MIT, and data generated only from it carries no
non-commercial restriction.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .aus import (
    COMPOUND_LABELS,
    ICT_BINDING,
    SFM_BINDING,
    AUSampleConfig,
    ExpressionSample,
    _sides,
    sample_expression,
)
from .sfm import EXPRESSION_NAMES, SurreyFaceModel, blend, load_sfm

if TYPE_CHECKING:
    from .ict import ICTModel
    from .realism import RealismConfig

__all__ = [
    "AGE_GROUPS",
    "entry_person",
    "person_of",
    "BU3DFE_CODES",
    "BU4DFE_NAMES",
    "EMOTIONS",
    "ETHNICITIES",
    "AU_GAINS",
    "EXPRESSION_MODES",
    "SFM_BINDINGS",
    "ICT_BINDINGS",
    "FACE_MODELS",
    "FACE_MODEL_CHOICES",
    "LICENCES",
    "PRESETS",
    "SynthConfig",
    "SynthFER3D",
    "SynthSequence",
    "SynthSubject",
    "SynthScan",
    "TREE_LAYOUTS",
    "REALISM_PRESETS",
    "range_grid",
    "realism_preset",
    "write_synth_tree",
]

# The six basic emotions in the SFM blendshape order, which every label index in this package follows.
EMOTIONS = EXPRESSION_NAMES
BU3DFE_CODES = {
    "anger": "AN",
    "disgust": "DI",
    "fear": "FE",
    "happiness": "HA",
    "sadness": "SA",
    "surprise": "SU",
    "neutral": "NE",
}
BU4DFE_NAMES = {
    "anger": "Angry",
    "disgust": "Disgust",
    "fear": "Fear",
    "happiness": "Happy",
    "sadness": "Sad",
    "surprise": "Surprise",
}
BOSPHORUS_CODES = {
    "anger": "ANGER",
    "disgust": "DISGUST",
    "fear": "FEAR",
    "happiness": "HAPPY",
    "sadness": "SADNESS",
    "surprise": "SURPRISE",
}
# BU-3DFE ethnicity codes, with roughly that dataset's proportions (synthetic: independent of the geometry)
ETHNICITIES = {"WH": 0.51, "AE": 0.24, "BL": 0.09, "LA": 0.08, "IN": 0.06, "AM": 0.02}
AGE_GROUPS = ("18-29", "30-39", "40-49", "50-70")
_AGE_P = (0.55, 0.25, 0.12, 0.08)
_FEMALE_P = 0.56  # BU-3DFE: 56 female, 44 male

_HEAD_CENTRE = np.array([0.0, 0.0, -90.0], np.float32)  # rotate about the middle of the head, not the nose
_KIND_SUBJECT, _KIND_SCAN, _KIND_SEQUENCE = 0, 1, 2
# Stream suffixes of v2: an ICT subject's draws, an action-unit sample's draws (appended to v1's keys, so v1's
# streams are untouched), per-AU timing and blinks of a sequence, scanner realism, an SFM subject's recipe in
# `expressions="mixed"`.
_STREAM_ICT, _STREAM_AUS, _STREAM_TIMING, _STREAM_REALISM, _STREAM_RECIPE = 2, 1, 2, 99, 3
_STREAM_WARP = 5  # a subject's identity warp, and (with the label's number appended) its expression gains
_WARP_BUMPS, _WARP_RADIUS, _WARP_REACH = 8, (18.0, 40.0), 70.0  # bumps, their radius, centres within this of the nose
_WARP_LOG_GAIN = 0.5  # an expression's gain stays within exp(-0.5) and exp(0.5) (0.61 to 1.65 times)

FACE_MODELS = ("sfm", "ict")
FACE_MODEL_CHOICES = (*FACE_MODELS, "both")
EXPRESSION_MODES = ("blendshapes", "aus", "mixed")
# How an SFM subject renders action units: `blend` (SFM_BINDING: a blend of its six emotion shapes, nominal AUs)
# or `transfer` (the ICT FaceKit's AU shapes carried onto the SFM's vertices, affectvlm.data.transfer).
SFM_BINDINGS = ("blend", "transfer")
# How ICT FaceKit subjects render the basic emotions: `aus` (the kit's own AU shapes, the default) or `blend`
# (the SFM's six whole-emotion blendshapes carried onto the kit's vertices, affectvlm.data.transfer.sfm_to_ict:
# a recipe of one face model on the other's identities). Compound expressions always use action units.
ICT_BINDINGS = ("aus", "blend")
# ict_binding="blend": the kit's vertices this near its inner lip line take the smooth fill of the motion.
_LIP_BAND_MM = 5.0
LICENCES = {
    "sfm": "non-commercial: research and teaching only (Surrey Face Model)",
    "ict": "MIT (ICT FaceKit, USC Institute for Creative Technologies)",
}


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
    confusable_pairs: tuple[tuple[str, str], ...] = (
        ("fear", "surprise"),
        ("anger", "disgust"),
        ("sadness", "anger"),
    )
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
    phase_seconds: tuple[tuple[float, float], ...] = (
        (0.3, 0.8),
        (0.5, 1.0),
        (0.8, 1.6),
        (0.5, 1.0),
        (0.3, 0.8),
    )
    """Duration ranges of neutral, onset, apex, offset, neutral (at tempo 1): about 4 s per sequence."""
    tempo_jitter: float = 0.2
    """Std of the log of each subject's tempo (multiplies every phase: slow and fast expressers)."""
    apex_intensity: tuple[float, float] = (0.75, 1.0)
    """Blendshape weight at the apex."""
    head_motion: float = 1.5
    """Amplitude of the smooth head rotation during a sequence (degrees); translation is the same in mm."""

    # --- v2: face models, action units, labels, realism (see the module docstring) -----------------------------
    face_model: str = "sfm"
    """``sfm``, ``ict`` or ``both`` (even subjects SFM, odd subjects ICT FaceKit)."""
    expressions: str = "blendshapes"
    """The SFM subjects' expressions: ``blendshapes`` (the six whole-emotion shapes), ``aus`` (action units
    through ``sfm_binding``) or ``mixed`` (each SFM subject one or the other, half and half, drawn from the
    subject's own stream: two expression recipes on one face model). ICT subjects always use action units."""
    sfm_binding: str = "blend"
    """How SFM subjects render action units (``expressions="aus"`` and compounds): ``blend`` (a blend of the SFM's
    six emotion shapes, :data:`affectvlm.data.aus.SFM_BINDING`; the AUs it records are nominal) or ``transfer``
    (the ICT FaceKit's AU shapes carried onto the SFM through a dense correspondence, :mod:`.transfer`; needs
    the ICT FaceKit; real per-side AUs, as on ICT subjects)."""
    ict_binding: str = "aus"
    """How ICT FaceKit subjects render the six emotions: ``aus`` (the kit's own action-unit shapes) or ``blend``
    (the SFM's six whole-emotion blendshapes carried onto the kit's vertices, :func:`.transfer.sfm_to_ict`;
    needs the SFM too; the AUs it records are nominal, as the SFM blend's). Compounds always use AUs."""
    neutral: bool = False
    """A neutral 4D sequence per subject too (the 3D set always has one neutral scan per subject)."""
    compound: bool = False
    """Add the compound expressions (evaluation only): one scan at the top intensity and one sequence each."""
    au_sampling: AUSampleConfig = AUSampleConfig()
    """How an action-unit sample varies its recipe (per-AU jitter, asymmetry, distractors, blinks)."""
    au_timing_jitter: float = 0.08
    """Std (seconds) of each AU's time shift in a sequence: AUs start (and end) at slightly different times."""
    blink_rate: float = 0.3
    """Blinks per second in action-unit sequences (a blink lasts 0.2-0.35 s)."""
    realism: RealismConfig | None = None
    """A :class:`affectvlm.data.realism.RealismConfig` applied to every scan and frame, or None (off)."""
    identity_warp: float = 0.0
    """Std (mm) of a smooth random deformation of each subject's neutral shape (a few broad bumps over the face):
    faces that the face model's identity modes do not span, as another face model's or a scanned person's."""
    expression_warp: float = 0.0
    """Std of the log of a smooth random gain over the face on each subject's expression of each label: the same
    expression moves one face's cheeks or brows more than another's, as recipes and face models differ."""
    only_labels: tuple[str, ...] | None = None
    """List only these labels' samples (`static_items`, `sequence_items`; each sample is the one the full list
    has): e.g. ``("neutral",)`` for more identities' neutral faces beside a full training set (docs/RESULTS.md,
    "Where the realistic scans lose, and more neutral faces in training"). None: every label."""

    def __post_init__(self) -> None:
        self._coerce_nested()
        self._check_v2()
        self._check_only_labels()
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
            "outlier_scale", "holes_per_scan", "tempo_jitter", "head_motion", "crop_offset", "identity_warp",
            "expression_warp",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("outlier_fraction", "missing_patch_prob", "subdivision_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.fps <= 0 or len(self.pose_jitter) != 3:
            raise ValueError("fps must be > 0 and pose_jitter three stds (yaw, pitch, roll)")

    def _coerce_nested(self) -> None:
        """Nested configs given as dicts (from JSON, ``--set``, ``to_dict``) become their dataclasses."""
        if isinstance(self.au_sampling, Mapping):
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.au_sampling.items()}
            object.__setattr__(self, "au_sampling", AUSampleConfig(**fields))
        if isinstance(self.realism, Mapping):
            from .realism import RealismConfig

            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.realism.items()}
            object.__setattr__(self, "realism", RealismConfig(**fields))

    def _check_v2(self) -> None:
        if self.face_model not in FACE_MODEL_CHOICES:
            raise ValueError(f"face_model must be one of {FACE_MODEL_CHOICES}, got {self.face_model!r}")
        if self.expressions not in EXPRESSION_MODES:
            raise ValueError(f"expressions must be one of {EXPRESSION_MODES}, got {self.expressions!r}")
        if self.sfm_binding not in SFM_BINDINGS:
            raise ValueError(f"sfm_binding must be one of {SFM_BINDINGS}, got {self.sfm_binding!r}")
        if self.ict_binding not in ICT_BINDINGS:
            raise ValueError(f"ict_binding must be one of {ICT_BINDINGS}, got {self.ict_binding!r}")
        if not isinstance(self.au_sampling, AUSampleConfig):
            raise ValueError(f"au_sampling must be an AUSampleConfig, got {self.au_sampling!r}")
        if self.au_timing_jitter < 0 or self.blink_rate < 0:
            raise ValueError("au_timing_jitter and blink_rate must be >= 0")
        if self.realism is not None and not hasattr(self.realism, "probability"):
            raise ValueError(f"realism must be a RealismConfig or None, got {self.realism!r}")

    def _check_only_labels(self) -> None:
        if self.only_labels is None:
            return
        from .aus import COMPOUND_LABELS

        labels = (self.only_labels,) if isinstance(self.only_labels, str) else tuple(self.only_labels)
        unknown = [x for x in labels if x not in ("neutral", *EMOTIONS, *COMPOUND_LABELS)]
        if not labels or unknown:
            raise ValueError(f"only_labels must name some of neutral, {', '.join(EMOTIONS)} and the compounds; got {unknown or labels}")
        object.__setattr__(self, "only_labels", labels)

    def face_model_of(self, subject: int) -> str:
        """The face model of subject `subject` (0-based): ``both`` gives even subjects the SFM, odd the ICT."""
        if self.face_model == "both":
            return FACE_MODELS[subject % 2]
        return self.face_model

    @property
    def face_models(self) -> tuple[str, ...]:
        """The face models this config uses."""
        return FACE_MODELS if self.face_model == "both" else (self.face_model,)

    @property
    def is_v1(self) -> bool:
        """Whether no v2 option is in use: the config generates exactly what SynthFER-3D v1 generated."""
        return not set(_V2_FIELDS) & set(self.to_dict())

    @property
    def uses_aus(self) -> bool:
        """Whether any sample goes through action units (ICT subjects, ``expressions="aus"``, compounds)."""
        ict_aus = self.face_model != "sfm" and self.ict_binding == "aus"
        return ict_aus or self.expressions != "blendshapes" or self.compound

    @classmethod
    def preset(cls, name: str, **overrides) -> SynthConfig:
        """A difficulty preset (``easy``, ``medium``, ``hard``) with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def replace(self, **changes) -> SynthConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as plain data. The fields v2 added are left out while at their defaults (and the AU
        fields while no sample uses action units), so a v1 config keeps its dict: its cache folder name and
        its tree's README stay the same. ``SynthConfig(**d)`` gives the config back."""
        out = dataclasses.asdict(self)
        if self.realism is not None:
            out["realism"] = self.realism.to_dict()
        unused = set() if self.uses_aus else {"au_sampling", "au_timing_jitter", "blink_rate", "sfm_binding"}
        for name in _V2_FIELDS:
            if name in unused or out[name] == _V2_DEFAULTS[name]:
                del out[name]
        return out


_V2_FIELDS = (
    "face_model",
    "expressions",
    "sfm_binding",
    "ict_binding",
    "neutral",
    "compound",
    "au_sampling",
    "au_timing_jitter",
    "blink_rate",
    "realism",
    "identity_warp",
    "expression_warp",
    "only_labels",
)
_V2_DEFAULTS = {
    f.name: dataclasses.asdict(f.default) if dataclasses.is_dataclass(f.default) else f.default
    for f in dataclasses.fields(SynthConfig)
    if f.name in _V2_FIELDS
}

# Difficulty presets: field overrides of the defaults ("medium" is the defaults).
PRESETS: dict[str, dict] = {
    "easy": dict(
        style_mix=0.03,
        confusion=0.05,
        expressiveness=0.1,
        neutral_leak=0.02,
        asymmetry=0.05,
        identity_asymmetry=0.2,
        intensity_jitter=0.05,
        pose_jitter=(2.0, 2.0, 1.0),
        translation_jitter=1.0,
        noise=0.05,
        outlier_fraction=0.0,
        holes_per_scan=0.0,
        missing_patch_prob=0.0,
        subdivision_prob=0.0,
        crop_radius=(100.0, 100.0),
        crop_offset=0.0,
        tempo_jitter=0.1,
        head_motion=0.5,
        au_sampling=AUSampleConfig(intensity_jitter=0.05, asymmetry=0.03, au_asymmetry=0.02, distractors=0.1),
        au_timing_jitter=0.04,
    ),
    "medium": {},
    "hard": dict(
        style_mix=0.25,
        confusion=0.5,
        expressiveness=0.4,
        neutral_leak=0.1,
        asymmetry=0.35,
        identity_asymmetry=0.8,
        intensity_jitter=0.25,
        pose_jitter=(12.0, 8.0, 4.0),
        translation_jitter=5.0,
        noise=0.4,
        outlier_fraction=0.005,
        holes_per_scan=2.5,
        missing_patch_prob=0.35,
        subdivision_prob=0.5,
        crop_radius=(70.0, 115.0),
        crop_offset=10.0,
        tempo_jitter=0.35,
        head_motion=3.0,
        au_sampling=AUSampleConfig(
            intensity_jitter=0.25, asymmetry=0.15, au_asymmetry=0.08, distractors=1.0, blink_prob=0.12
        ),
        au_timing_jitter=0.15,
    ),
}


_SUBJECT_ID = re.compile(r"([FM])(\d{3,})")


def person_of(subject: str) -> str:
    """The person a SynthFER-3D subject id names: its 3D scans' id (``F0001``) for both that id and its 4D
    sequences' id (``F001``), so that folds keep a person's scans and sequences on one side. Other ids are
    returned as they are."""
    m = _SUBJECT_ID.fullmatch(subject)
    return f"{m.group(1)}{int(m.group(2)):04d}" if m else subject


def entry_person(entry: Mapping) -> str:
    """The person a render-cache entry shows: `person_of` its subject for SynthFER-3D entries, else the subject
    (other datasets give each person one id)."""
    subject = entry["subject"]
    return person_of(subject) if str(entry.get("dataset")).startswith("synth") else subject


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
        face_model: ``sfm`` or ``ict``; for the ICT FaceKit `coefficients` are its 100 identity weights and
            `style`'s diagonal is the subject's per-emotion gain (action units need no blendshape mix).
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
    face_model: str = "sfm"

    @property
    def metadata(self) -> dict:
        """Synthetic metadata for prompts: gender (``female``/``male``), age group, ethnicity code; and the face
        model with its licence."""
        return {
            "gender": self.gender,
            "age_group": self.age_group,
            "ethnicity": self.ethnicity,
            "synthetic_metadata": True,
            "face_model": self.face_model,
            "licence": LICENCES[self.face_model],
        }


@dataclass(eq=False)
class SynthScan:
    """One generated static scan (or one 4D frame).

    Attributes:
        vertices: (N, 3) float32 mm. faces: (M, 3) int64. colors: (N, 3) uint8. uv: (N, 2) float32.
        subject: its subject. label: an emotion of `EMOTIONS`, ``"neutral"`` or a compound label.
        intensity: 1-4, 0 for neutral.
        metadata: :meth:`SynthFER3D.sample_metadata` (face model, licence, AU weights, ...).
        realism: the realism kinds applied (then `faces` and `uv` may be None: a point cloud).
    """

    vertices: np.ndarray
    faces: np.ndarray | None
    colors: np.ndarray
    uv: np.ndarray | None
    subject: SynthSubject
    label: str
    intensity: int
    metadata: dict = field(default_factory=dict)
    realism: tuple[str, ...] = ()

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
        metadata: :meth:`SynthFER3D.sample_metadata` (the AU weights are the apex's).
        realism: the realism kinds applied; `scans` then holds the frames as the scanner gave them (their
            vertex counts may differ from `frames`', which stay the clean shared-topology frames).
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
    metadata: dict = field(default_factory=dict)
    realism: tuple[str, ...] = ()
    scans: list | None = field(default=None, repr=False)

    def to_scans(self, path_prefix: str | None = None) -> list:
        """The frames as a list of :class:`affectvlm.scan.Scan` (with realism, as the scanner gave them)."""
        from ..scan.types import Scan

        if self.scans is None:
            self.scans = [
                Scan(vertices=v, faces=self.faces, colors=self.colors, uv=self.uv) for v in self.frames
            ]
        names = [path_prefix and f"{path_prefix}/{i:03d}" for i in self.frame_indices]
        return [scan.replace(path=name) for scan, name in zip(self.scans, names)]


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


# SFM vertices of the iBUG landmarks where a scanner loses data (eos's ibug_to_sfm.txt; iBUG 37-42 and 43-48 the
# eyes, 32 and 36 the nostrils, 63 and 67 the inner lips): realism's holes go to the vertex nearest each centroid.
_SFM_HOLE_SITES = {
    "eyes": ((177, 172, 191, 181, 173, 174), (614, 624, 605, 610, 607, 606)),
    "nostrils": ((100,), (537,)),
    "mouth": ((423, 442),),
}
# The same sites as 0-based positions in the ICT FaceKit's `landmarks68` (Multi-PIE order, as iBUG's).
_ICT_HOLE_SITES = {
    "eyes": (tuple(range(36, 42)), tuple(range(42, 48))),
    "nostrils": ((31,), (35,)),
    "mouth": ((62, 66),),
}
# Where the ICT FaceKit's neutral nose tip is put: at the SFM mean's, so that both models share the generator's
# frame (pose about `_HEAD_CENTRE`, crop about the nose).
_NOSE_TIP = np.array([0.0, 0.0, 3.4], np.float32)
_BLINK = 45
# Rendering gains on a label's AU weights, chosen by looking at the contact sheet (docs/data.md): on the ICT
# FaceKit these AUs at the recipes' full weight made the face read as another emotion. Anger: a full upper-lid
# raise (5) with the brows' small lowering read as fear; the shouting prototype's funnel (22), lips part (25),
# the kit's AU10 shape (mouthShrugUpper, a pout) and a full jaw drop (26) made an "oh" of surprise; disgust:
# 16 + 26 gaped like surprise; fear: 27 (jawOpen 1.0, 42 mm) screamed like surprise; sadness: the kit's AU11
# shape (mouthUpperUp) bares the teeth like an AU10 snarl. Weights are scaled before any binding and recorded
# as scaled.
AU_GAINS: dict[str, dict[int, float]] = {
    "anger": {5: 0.3, 10: 0.4, 22: 0.15, 25: 0.5, 26: 0.5},
    "disgust": {16: 0.5, 26: 0.4},
    "fear": {26: 0.6, 27: 0.5},
    "sadness": {11: 0.35},
}


def _hole_sites(vertices: np.ndarray, groups: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """{site name: the vertex nearest the centroid of each group of landmark vertices}."""
    out = {}
    for name, sites in groups.items():
        centres = np.stack([vertices[list(site)].mean(0) for site in sites])
        out[name] = np.argmin(((vertices[None] - centres[:, None]) ** 2).sum(-1), axis=1)
    return out


@dataclass(frozen=True, eq=False)
class _FaceParts:
    """What the capture needs of a face model: its triangles, uv, nose tip, realism's hole sites (vertex
    indices), and whether it may be midpoint-subdivided (`subdivision_prob`: the SFM only)."""

    name: str
    triangles: np.ndarray
    texcoords: np.ndarray
    nose_index: int
    hole_sites: dict
    subdividable: bool


class _ICTFace:
    """The ICT FaceKit as the generator uses it: the face and head/neck regions (what a scanner sees; the
    eyeballs are left out, so the eyes are open holes), millimetres, moved so that the neutral nose tip is at
    the SFM mean's. The uv is a frontal projection (the kit's uv is not in the npz)."""

    def __init__(self, model: ICTModel):
        face, head = model.regions["face"].vertices, model.regions["headneck"].vertices
        if face.start != 0 or head.start != face.stop:
            raise ValueError(
                "the ICT FaceKit file must hold the face, then the head and neck, as its first vertices"
            )
        self.model, self.n = model, head.stop
        self.shift = _NOSE_TIP - model.neutral[model.nose_tip_index]
        self.expressions = model.expressions[:, : self.n]
        neutral = model.neutral[: self.n] + self.shift
        lo, hi = neutral[:, :2].min(0), neutral[:, :2].max(0)
        marks = model.landmarks68
        groups = (
            {}
            if marks is None
            else {k: tuple(tuple(marks[i] for i in g) for g in v) for k, v in _ICT_HOLE_SITES.items()}
        )
        self.parts = _FaceParts(
            name="ict", triangles=model.triangles_for(), texcoords=((neutral[:, :2] - lo) / (hi - lo)).astype(np.float32),
            nose_index=model.nose_tip_index, hole_sites=_hole_sites(neutral, groups), subdividable=False,
        )  # fmt: skip

    def shape(self, coefficients: np.ndarray) -> np.ndarray:
        return (self.model.face(coefficients)[: self.n] + self.shift).astype(np.float32)

    def displacement(self, au_weights: Mapping[int, float], asymmetry: Mapping[int, float]) -> np.ndarray:
        """(n, 3) displacement of AU weights (bilateral) with per-AU asymmetry, through the kit's AU table."""
        return _au_displacement(self.model.expression_names, self.expressions, au_weights, asymmetry)


def _au_displacement(names, expressions: np.ndarray, au_weights, asymmetry) -> np.ndarray:
    """(N, 3) displacement of AU weights (bilateral, per-AU asymmetry) through the kit's AU table, given the
    kit's shapes (E, N, 3) on some face's vertices (the kit's own, or carried onto the SFM)."""
    w = ICT_BINDING.weight_vector(names, au_weights, asymmetry)
    used = np.flatnonzero(w)
    return blend(w[used], expressions[used])


@dataclass(frozen=True, eq=False)
class _Expression:
    """One sample's expression: SFM blendshape weights (6,) (v1, or bound from AUs) with the SFM's vertex-level
    left/right gain, and/or an action-unit sample (on the ICT FaceKit its asymmetry is the sides' own)."""

    blendshapes: np.ndarray | None = None
    asymmetry: float = 0.0
    sample: ExpressionSample | None = None


@dataclass(frozen=True, eq=False)
class _SequencePlan:
    """What a sequence is before capture: its subject, expression, timing, per-AU envelopes and blinks (AU
    path), and the random stream the capture continues."""

    subject: SynthSubject
    expression: _Expression
    weights: np.ndarray
    phases: dict
    rng: np.random.Generator
    key: list
    shifts: dict = field(default_factory=dict)
    blinks: np.ndarray | None = None


def _sfm_vector(shape_weights: Mapping[str, float]) -> np.ndarray:
    return np.array([shape_weights.get(name, 0.0) for name in EMOTIONS], np.float32)


def _biased(sample: ExpressionSample, bias: float) -> ExpressionSample:
    """The sample with the subject's habitual left/right bias added to every AU's asymmetry (unilateral AUs
    stay unilateral)."""
    left, right = {}, {}
    for au, w in sample.au_weights.items():
        left[au], right[au] = _sides(w, sample.asymmetry[au] + bias)
    return dataclasses.replace(
        sample, left={k: v for k, v in left.items() if v > 0}, right={k: v for k, v in right.items() if v > 0}
    )


def _gained(sample: ExpressionSample, gains: Mapping[int, float]) -> ExpressionSample:
    """The sample with some AUs' weights scaled (both sides)."""
    scale = lambda side: {au: w * gains.get(au, 1.0) for au, w in side.items()}  # noqa: E731
    return (
        dataclasses.replace(sample, left=scale(sample.left), right=scale(sample.right)) if gains else sample
    )


def _without_blink(sample: ExpressionSample) -> ExpressionSample:
    drop = lambda side: {au: w for au, w in side.items() if au != _BLINK}  # noqa: E731
    return dataclasses.replace(sample, left=drop(sample.left), right=drop(sample.right))


def _rounded(weights: Mapping[int, float]) -> dict[int, float]:
    """AU weights for metadata: clipped to [0, 1], 4 decimals, zeros dropped."""
    out = {int(au): round(min(max(float(w), 0.0), 1.0), 4) for au, w in sorted(weights.items())}
    return {au: w for au, w in out.items() if w > 0}


def _scan_label_number(label: str) -> int:
    """v1's numbering (neutral 0, emotions 1-6), then the compound labels (7, 8, ...)."""
    if label == "neutral":
        return 0
    if label in EMOTIONS:
        return 1 + EMOTIONS.index(label)
    if label in COMPOUND_LABELS:
        return 7 + COMPOUND_LABELS.index(label)
    raise ValueError(
        f"label {label!r} is not 'neutral', one of {EMOTIONS} or a compound label {COMPOUND_LABELS}"
    )


def _sequence_label_number(label: str) -> int:
    """v1's numbering (emotions 0-5), then neutral (6) and the compound labels (7, 8, ... as in scans)."""
    if label in EMOTIONS:
        return EMOTIONS.index(label)
    return 6 if label == "neutral" else _scan_label_number(label)


def _frame_indices(total: int, num_frames: int | None, frame_indices) -> np.ndarray:
    if frame_indices is None and (num_frames is None or num_frames >= total):
        frame_indices = np.arange(total)
    elif frame_indices is None:
        frame_indices = np.round(np.linspace(0, total - 1, num_frames)).astype(int)
    frame_indices = np.asarray(frame_indices, dtype=int)
    if len(frame_indices) and (frame_indices.min() < 0 or frame_indices.max() >= total):
        raise IndexError(f"frame indices out of range [0, {total})")
    return frame_indices


def _kept(sites: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Vertex indices of the full mesh -> indices after `_subset(keep, ...)`, dropping the cut ones."""
    remap = np.cumsum(keep) - 1
    return {name: remap[idx[keep[idx]]] for name, idx in sites.items() if keep[idx].any()}


# Realism kinds that change the file's frame (a rotation, a shift, a scale): a sequence's frames share one.
_FRAME_KINDS = frozenset({"turn", "axes", "offset", "units"})


def take_realism(scans: list, config, key: list, landmarks: dict) -> tuple[list, tuple[str, ...]]:
    """Scanner realism (:func:`affectvlm.data.realism.apply_realism`) on one take, a scan or a sequence's frames: which
    kinds apply is drawn once, then each kind runs from its own stream, the same on every frame (holes and crops
    stay put, the density is the same), and a kind that changes the frame is fitted on the first frame and
    applied to all (one file frame per take). `key` seeds the draws; `landmarks` name the holes' vertex sites
    ({} for none). Returns (scans, the kinds applied to the first)."""
    from .realism import KINDS, apply_realism, stream_index

    decide = np.random.default_rng(key)
    kinds = [kind for kind in KINDS if config.draws(kind) and decide.random() < config.probability(kind)]
    applied: list[str] = []
    notes = [{} for _ in scans]  # each frame's, from kind to kind (realism.apply_realism)
    for kind in kinds:
        only = config.replace(**{f"p_{k}": float(k == kind) for k in KINDS})
        marks = landmarks if kind == "holes" else None
        stream = [*key, stream_index(kind)]
        if kind in _FRAME_KINDS:
            first, done = apply_realism(scans[0], np.random.default_rng(stream), only, marks)
            if done:
                scans = [first, *(_same_transform(scans[0], first, s) for s in scans[1:])]
        else:
            rngs = [np.random.default_rng(stream) for _ in scans]
            results = [apply_realism(s, r, only, marks, n) for s, r, n in zip(scans, rngs, notes)]
            scans, done = [r[0] for r in results], results[0][1]
        applied += done
    return scans, tuple(applied)


def _same_transform(before, after, scan):
    """`scan` moved by the affine map that took `before`'s vertices to `after`'s (fitted exactly: same vertices)."""
    ones = np.ones((before.num_vertices, 1))
    a, *_ = np.linalg.lstsq(np.hstack([before.vertices, ones]), after.vertices.astype(np.float64), rcond=None)
    v = np.hstack([scan.vertices, np.ones((scan.num_vertices, 1))]) @ a
    return scan.replace(vertices=v.astype(np.float32))


class SynthFER3D:
    """The SynthFER-3D generator.

    Args:
        config: the parameters (default: the ``medium`` preset).
        sfm: a loaded :class:`SurreyFaceModel`, its folder, or None to :func:`load_sfm` (``$AFFECTVLM_SFM_DIR``
            ...); loaded only when a subject uses it.
        ict: a loaded :class:`affectvlm.data.ict.ICTModel`, its folder or npz, or None to
            :func:`affectvlm.data.ict.load_ict`; loaded only when a subject uses it.

    Example:
        >>> gen = SynthFER3D(SynthConfig(seed=1, num_subjects=10))
        >>> scan = gen.scan(0, "happiness", 4)            # SynthScan, vertices (N, 3)
        >>> seq = gen.sequence(0, "surprise", num_frames=16)  # SynthSequence, frames (16, N, 3)
        >>> both = SynthFER3D(SynthConfig(face_model="both", neutral=True))  # subject 1 is an ICT face
    """

    def __init__(self, config: SynthConfig | None = None, sfm=None, ict=None):
        self.config = config or SynthConfig()
        self._sources = {"sfm": sfm, "ict": ict}
        self._subjects: dict[int, SynthSubject] = {}
        self._shapes: dict[int, np.ndarray] = {}

    @cached_property
    def sfm(self) -> SurreyFaceModel:
        src = self._sources["sfm"]
        return load_sfm(src) if src is None or isinstance(src, str | os.PathLike) else src

    @cached_property
    def ict(self) -> ICTModel:
        from .ict import load_ict

        src = self._sources["ict"]
        return load_ict(src) if src is None or isinstance(src, str | os.PathLike) else src

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

    @cached_property
    def _ict_face(self) -> _ICTFace:
        return _ICTFace(self.ict)

    @cached_property
    def _ict_on_sfm(self):
        """(the kit's triangles, the correspondence of the SFM mean's vertices on the kit's neutral face and head)."""
        from .transfer import ict_to_sfm

        ict = self.ict
        faces = ict.triangles_for()
        return faces, ict_to_sfm(self.sfm.mean, ict.neutral, faces, ict.landmarks68)

    @cached_property
    def _sfm_au_shapes(self) -> np.ndarray:
        """(53, N, 3) the ICT FaceKit's expression shapes carried onto the SFM's vertices (``sfm_binding=
        "transfer"``), through the correspondence of the SFM mean on the kit's neutral face and head."""
        faces, corr = self._ict_on_sfm
        return corr.transfer(faces, self.ict.expressions)

    def carried_onto_sfm(self, shape: np.ndarray) -> np.ndarray:
        """(N_sfm, 3) float32: an ICT FaceKit face as :meth:`shape` gives it, carried onto the SFM mean's vertices:
        its displacement from the kit's neutral face (identity and expression together) read where each SFM
        vertex corresponds (the correspondence of ``sfm_binding="transfer"``) and added to the SFM mean, so that
        faces of the two face models can be compared vertex by vertex (`train/shape_oracle.py --cross`)."""
        faces, corr = self._ict_on_sfm
        face = self._ict_face
        displacement = np.zeros_like(self.ict.neutral, dtype=np.float32)
        displacement[: face.n] = shape - (self.ict.neutral[: face.n] + face.shift)
        return (self.sfm.mean + corr.transfer(faces, displacement)).astype(np.float32)

    @cached_property
    def _sfm_parts(self) -> _FaceParts:
        sfm = self.sfm
        return _FaceParts(
            name="sfm", triangles=sfm.triangles, texcoords=sfm.texcoords, nose_index=self.nose_index,
            hole_sites=_hole_sites(sfm.mean, _SFM_HOLE_SITES) if sfm.num_vertices > 845 else {}, subdividable=True,
        )  # fmt: skip

    def _parts(self, face_model: str) -> _FaceParts:
        return self._ict_face.parts if face_model == "ict" else self._sfm_parts

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
        face_model = cfg.face_model_of(index)
        if face_model == "sfm":
            rng = np.random.default_rng([cfg.seed, _KIND_SUBJECT, index])
            k = len(self.sfm.eigenvalues)
            coefficients = rng.standard_normal(k).astype(np.float32) * cfg.identity_scale
        else:
            rng = np.random.default_rng([cfg.seed, _KIND_SUBJECT, index, _STREAM_ICT])
            coefficients = self.ict.random_identity(rng, cfg.identity_scale)
        # Expression style: identity + a little of every other emotion + more of the confusable partner;
        # each emotion's row scaled by the subject's expressiveness for it.
        style = np.eye(6, dtype=np.float32) + rng.uniform(0, cfg.style_mix, (6, 6)).astype(np.float32) * (
            1 - np.eye(6, dtype=np.float32)
        )
        for a, b in cfg.confusable_pairs:
            i, j = EMOTIONS.index(a), EMOTIONS.index(b)
            style[i, j] += rng.uniform(0, cfg.confusion)
            style[j, i] += rng.uniform(0, cfg.confusion)
        style *= np.exp(rng.normal(0, cfg.expressiveness, (6, 1))).astype(np.float32)
        # Metadata: drawn from a separate stream so that it is independent of the geometry by construction.
        meta = np.random.default_rng([cfg.seed, _KIND_SUBJECT, index, 1])
        female = meta.random() < _FEMALE_P
        ethnicity = str(
            meta.choice(list(ETHNICITIES), p=np.array(list(ETHNICITIES.values())) / sum(ETHNICITIES.values()))
        )
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
            face_model=face_model,
        )

    def _is_female(self, index: int) -> bool:
        return np.random.default_rng([self.config.seed, _KIND_SUBJECT, index, 1]).random() < _FEMALE_P

    def identity_shape(self, index: int) -> np.ndarray:
        """(N, 3) float32 neutral shape of subject `index`: on the SFM with its shape asymmetry applied; on the
        ICT FaceKit as the kit's identity modes give it (their own asymmetry; the kit has no symmetry map)."""
        if index not in self._shapes:
            s = self.subject(index)
            if s.face_model == "ict":
                shape = self._ict_face.shape(s.coefficients)
            else:
                shape = self.sfm.identity(s.coefficients)
                # symmetric part + (1 + a) * antisymmetric part: a < -1 flips, a = -1 makes the face symmetric
                shape = shape + s.shape_asymmetry * 0.5 * (shape - self._mirror(shape))
            if self.config.identity_warp > 0:
                bumps = self._bumps(shape, s, [_STREAM_WARP])
                shape = shape + bumps @ self._warp_rng(s, [_STREAM_WARP]).normal(
                    0.0, self.config.identity_warp, (bumps.shape[1], 3)
                )
            self._shapes[index] = shape.astype(np.float32)
        return self._shapes[index]

    def _warp_rng(self, s: SynthSubject, stream: list[int]) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, _KIND_SUBJECT, s.index, *stream, 100])

    def _bumps(self, shape: np.ndarray, s: SynthSubject, stream: list[int]) -> np.ndarray:
        """(N, _WARP_BUMPS) smooth bumps over the face (Gaussians of random radius about random vertices near the
        nose tip), drawn from the subject's `stream`: the basis of its warps."""
        rng = np.random.default_rng([self.config.seed, _KIND_SUBJECT, s.index, *stream])
        nose = shape[self._parts(s.face_model).nose_index]
        near = np.flatnonzero(np.linalg.norm(shape - nose, axis=1) < _WARP_REACH)
        centres = shape[rng.choice(near, _WARP_BUMPS, replace=False)]
        radii = rng.uniform(*_WARP_RADIUS, _WARP_BUMPS)
        d2 = ((shape[:, None, :] - centres[None]) ** 2).sum(-1)
        return np.exp(-0.5 * d2 / radii**2).astype(np.float32)

    def _expression_gain(self, s: SynthSubject, label: str) -> np.ndarray | float:
        """(N,) the subject's smooth gain over the face on its expressions of `label` (``expression_warp``;
        1.0 when off): the same for every intensity and every frame."""
        if self.config.expression_warp <= 0:
            return 1.0
        stream = [_STREAM_WARP, _scan_label_number(label)]
        bumps = self._bumps(self.identity_shape(s.index), s, stream)
        amplitudes = self._warp_rng(s, stream).normal(0.0, self.config.expression_warp, bumps.shape[1])
        return np.exp(np.clip(bumps @ amplitudes, -_WARP_LOG_GAIN, _WARP_LOG_GAIN)).astype(np.float32)

    # --- expressions ----------------------------------------------------------------------------------------

    def expression_weights(
        self, subject: SynthSubject, label: str, strength: float, rng: np.random.Generator
    ) -> np.ndarray:
        """(6,) blendshape weights of `label` at `strength` (0 for neutral) for `subject`."""
        if label == "neutral":
            return rng.normal(0, self.config.neutral_leak, 6).astype(np.float32)
        if label not in EMOTIONS:
            raise ValueError(f"label {label!r} is not 'neutral' or one of {EMOTIONS}")
        return (subject.style[EMOTIONS.index(label)] * strength).astype(np.float32)

    def _displacement(self, weights: np.ndarray, asymmetry: float, face_model: str = "sfm") -> np.ndarray:
        """(6,) weights -> (N, 3) displacement, symmetrised through the vertex pairs and then given a
        left/right gain difference, so that asymmetry is controlled rather than inherited from the
        blendshapes. On an ICT subject (``ict_binding="blend"``) the same, through the SFM's symmetrised shapes
        carried onto the kit's vertices."""
        if face_model == "ict":
            d = blend(weights, self._ict_blend_shapes)
            return d * (1.0 + asymmetry * self._ict_side)[:, None]
        d = blend(weights, self.sfm.expressions)  # (6,) x (6, N, 3) -> (N, 3)
        d = 0.5 * (d + self._mirror(d))
        return d * (1.0 + asymmetry * self._side)[:, None]

    @cached_property
    def _ict_blend_shapes(self) -> np.ndarray:
        """(6, n, 3) the SFM's six emotion blendshapes, symmetrised, carried onto the ICT face's vertices."""
        from .transfer import harmonic_fill, sfm_to_ict

        face, ict = self._ict_face, self.ict
        neutral = ict.neutral[: face.n]
        corr = sfm_to_ict(neutral, ict.landmarks68, self.sfm.mean, self.sfm.triangles)
        shapes = self.sfm.expressions
        moved = corr.transfer(self.sfm.triangles, 0.5 * (shapes + self._mirror(shapes)))
        # The kit's mouth and eye sockets lie off the SFM's closed surface, and near the lip line an upper-lip
        # vertex can land on the SFM's lower lip (and the reverse): there, within the face region, the motion is
        # the smooth fill of the motion around (the head and neck keep the fade-out to still).
        inner_lip = neutral[np.asarray(ict.landmarks68)[60:68]]
        along = np.linspace(0.0, 1.0, 16)[:, None, None]
        line = (inner_lip + along * (np.roll(inner_lip, -1, axis=0) - inner_lip)).reshape(-1, 3)
        near_lips = np.min(np.linalg.norm(neutral[:, None] - line[None], axis=-1), axis=1) < _LIP_BAND_MM
        free = ((corr.weight < 1.0) | near_lips) & (np.arange(face.n) < ict.regions["face"].vertices.stop)
        return harmonic_fill(moved, face.parts.triangles, free)

    @cached_property
    def _ict_side(self) -> np.ndarray:
        """(n,) in [-1, 1]: which side of the ICT face each vertex is on (as `_side` for the SFM)."""
        x = self.ict.neutral[: self._ict_face.n, 0] - self.ict.neutral[self.ict.nose_tip_index, 0]
        return np.tanh(x / 20.0).astype(np.float32)

    def _own_aus(self, subject: SynthSubject) -> bool:
        """Whether the subject renders action units with per-AU shapes (ICT FaceKit, or the SFM with the kit's
        shapes transferred) rather than through the SFM's blend of its six emotions."""
        return subject.face_model == "ict" or self.config.sfm_binding == "transfer"

    def uses_aus(self, subject: SynthSubject, label: str) -> bool:
        """Whether this sample's expression is built from action units (ICT subjects unless
        ``ict_binding="blend"``, ``expressions="aus"``, compound labels) rather than the SFM's blendshapes."""
        if label in COMPOUND_LABELS:
            return True
        if subject.face_model == "ict":
            return self.config.ict_binding == "aus"
        return self._sfm_aus(subject)

    def _sfm_aus(self, subject: SynthSubject) -> bool:
        """Whether an SFM subject's basic emotions are action units (``expressions="aus"``, or half the subjects
        of ``mixed``, drawn from a stream of their own so that nothing else about them changes)."""
        mode = self.config.expressions
        if mode == "mixed":
            key = [self.config.seed, _KIND_SUBJECT, subject.index, _STREAM_RECIPE]
            return bool(np.random.default_rng(key).random() < 0.5)
        return mode == "aus"

    def _gain(self, subject: SynthSubject, label: str) -> float:
        """The subject's expressiveness for an emotion (its style's diagonal); 1 for other labels."""
        return (
            float(subject.style[EMOTIONS.index(label), EMOTIONS.index(label)]) if label in EMOTIONS else 1.0
        )

    def _expression(
        self, s: SynthSubject, label: str, strength: float, rng: np.random.Generator, sequence: bool = False
    ) -> _Expression:
        """The expression of a sample at `strength` (0 for neutral) from its stream: v1's blendshapes, or an
        action-unit sample at ``strength`` times the subject's gain (in a sequence without its blink: the
        sequence blinks on its own time)."""
        cfg = self.config
        if not self.uses_aus(s, label):
            weights = self.expression_weights(s, label, strength, rng)
            return _Expression(blendshapes=weights, asymmetry=s.asymmetry_bias + rng.normal(0, cfg.asymmetry))
        sample = sample_expression(
            label, rng, intensity=strength * self._gain(s, label), config=cfg.au_sampling
        )
        sample = _gained(sample, AU_GAINS.get(label, {}))
        sample = _without_blink(sample) if sequence else sample
        if self._own_aus(s):
            return _Expression(sample=_biased(sample, s.asymmetry_bias))
        # The SFM binding's blend of a variant with few AUs is weak (fear 5+20+25 binds to fear 0.3): the blend is
        # scaled so that its strongest shape has the sample's intensity (emotion-level control is all the SFM has).
        weights = _sfm_vector(SFM_BINDING.shape_weights(sample.au_weights))
        if label != "neutral" and weights.max() > 0:
            weights *= min(sample.intensity, 1.0) / weights.max()
        return _Expression(
            blendshapes=weights, asymmetry=s.asymmetry_bias + rng.normal(0, cfg.asymmetry), sample=sample
        )

    def _expression_displacement(
        self, s: SynthSubject, expression: _Expression, aus: Mapping[int, float] | None = None
    ) -> np.ndarray:
        """(N, 3) displacement of an expression (`aus`: other bilateral AU weights for the sample's sides)."""
        if expression.blendshapes is None:  # per-AU shapes
            sample = expression.sample
            aus = sample.au_weights if aus is None else aus
            if s.face_model == "ict":
                return self._ict_face.displacement(aus, sample.asymmetry)
            return _au_displacement(self.ict.expression_names, self._sfm_au_shapes, aus, sample.asymmetry)
        weights = expression.blendshapes if aus is None else _sfm_vector(SFM_BINDING.shape_weights(aus))
        return self._displacement(weights, expression.asymmetry, s.face_model)

    def _metadata(self, s: SynthSubject, label: str, expression: _Expression) -> dict:
        meta = {
            **s.metadata,
            "expressions": "aus" if expression.sample else "blendshapes",
            "evaluation_only": label in COMPOUND_LABELS,
        }
        if expression.blendshapes is not None:
            meta["blendshapes"] = {
                name: round(float(w), 4) for name, w in zip(EMOTIONS, expression.blendshapes)
            }
            if s.face_model == "ict":  # the SFM's blendshapes on the kit's vertices
                meta["blend_binding"] = "transfer"
        sample = expression.sample
        if sample is None:
            return meta
        meta.update(variant=sample.variant, au_code=sample.code, au_source=sample.source)
        if expression.blendshapes is None:
            binding = {} if s.face_model == "ict" else {"au_binding": "transfer"}
            return {
                **meta,
                **binding,
                "aus": _rounded(sample.au_weights),
                "au_left": _rounded(sample.left),
                "au_right": _rounded(sample.right),
            }
        # the SFM has no AU shapes: its AU content is what the bound blend stands for (SFMBinding.realised_aus)
        realised = SFM_BINDING.realised_aus(dict(zip(EMOTIONS, map(float, expression.blendshapes))))
        return {
            **meta,
            "aus": _rounded(realised),
            "aus_requested": _rounded(sample.au_weights),
            "aus_nominal": True,
        }

    # --- nuisances ------------------------------------------------------------------------------------------

    def _topology(self, rng: np.random.Generator, parts: _FaceParts) -> tuple[bool, np.ndarray]:
        subdivide = rng.random() < self.config.subdivision_prob and parts.subdividable
        return subdivide, (self._subdivision[1] if subdivide else parts.triangles)

    def _densify(self, v: np.ndarray, subdivide: bool) -> np.ndarray:
        """(..., N, 3) -> (..., N + E, 3) when subdividing (edge midpoints appended)."""
        if not subdivide:
            return v
        edges = self._subdivision[0]
        mid = 0.5 * (v[..., edges[:, 0], :] + v[..., edges[:, 1], :])
        return np.concatenate([v, mid], axis=-2)

    def _keep_mask(self, v: np.ndarray, rng: np.random.Generator, nose_index: int) -> np.ndarray:
        """(N,) bool: the crop (a sphere about the jittered nose tip) minus holes and a missing patch,
        decided in head coordinates (before pose) on the vertices `v` (N, 3)."""
        cfg = self.config
        nose = v[nose_index].copy()
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

    def _uv(self, subdivide: bool, parts: _FaceParts) -> np.ndarray:
        return self._densify(parts.texcoords, subdivide)  # (N, 2): midpoints interpolate uv too

    def _capture(self, v: np.ndarray, s: SynthSubject, rng: np.random.Generator, parts: _FaceParts) -> tuple:
        """A static scan's scanner: density, crop, holes and patch, pose, position, depth noise, colours.
        Returns (vertices, faces, colors, uv, keep) with `keep` the mask over the (densified) vertices."""
        cfg = self.config
        subdivide, faces = self._topology(rng, parts)
        v = self._densify(v, subdivide)
        keep = self._keep_mask(v, rng, parts.nose_index)
        rot = _rotation(*(rng.normal(0, cfg.pose_jitter)))
        v = (
            (v - _HEAD_CENTRE) @ rot.T
            + _HEAD_CENTRE
            + s.offset
            + rng.normal(0, cfg.translation_jitter, 3).astype(np.float32)
        )
        v = self._scanner_noise(v.astype(np.float32), rng)
        colors = self._colors(s, len(v), rng)
        return (*_subset(keep, v, faces, colors, self._uv(subdivide, parts)), keep)

    def _realism(
        self, scans: list, key: list, parts: _FaceParts, keep: np.ndarray
    ) -> tuple[list, tuple[str, ...]]:
        """`config.realism` on clean scans (one, or a sequence's frames), holes at the model's eyes, nostrils
        and mouth; (scans, ()) when realism is off."""
        realism = self.config.realism
        if realism is None or not realism.enabled:
            return scans, ()
        return take_realism(scans, realism, [*key, _STREAM_REALISM], _kept(parts.hole_sites, keep))

    # --- samples --------------------------------------------------------------------------------------------

    def _scan_key(self, s: SynthSubject, label: str, intensity: int) -> list[int]:
        key = [self.config.seed, _KIND_SCAN, s.index, _scan_label_number(label), intensity]
        return [*key, _STREAM_AUS] if self.uses_aus(s, label) else key

    def _check_scan(self, label: str, intensity: int) -> int:
        """The intensity a scan of `label` is generated (and reported) at: 0 for neutral."""
        levels = len(self.config.intensity_levels)
        if label != "neutral" and not 1 <= intensity <= levels:
            raise ValueError(f"intensity must be in 1..{levels}, got {intensity}")
        _scan_label_number(label)  # a known label
        return 0 if label == "neutral" else int(intensity)

    def _scan_expression(
        self, s: SynthSubject, label: str, intensity: int, rng: np.random.Generator
    ) -> _Expression:
        cfg = self.config
        strength = (
            0.0
            if intensity == 0
            else cfg.intensity_levels[intensity - 1] * math.exp(rng.normal(0, cfg.intensity_jitter))
        )
        return self._expression(s, label, strength, rng)

    def _scan_shape(
        self, s: SynthSubject, label: str, intensity: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, _Expression]:
        """A scan's face before the scanner (its expression drawn from `rng`, the scan's own stream)."""
        expression = self._scan_expression(s, label, intensity, rng)
        gain = self._expression_gain(s, label)
        v = self.identity_shape(s.index) + np.reshape(gain, (-1, 1)) * self._expression_displacement(s, expression)
        return v, expression

    def shape(self, subject: int, label: str, intensity: int = 4) -> np.ndarray:
        """(N, 3) float32 mm: the face of :meth:`scan` with the same arguments before the scanner (no pose, crop,
        density, noise or realism): every vertex of its face model, in the model's own frame and vertex order,
        so that two subjects' shapes correspond vertex by vertex (`train/shape_oracle.py`)."""
        intensity = self._check_scan(label, intensity)
        s = self.subject(subject)
        rng = np.random.default_rng(self._scan_key(s, label, intensity))
        return self._scan_shape(s, label, intensity, rng)[0].astype(np.float32)

    def scan(self, subject: int, label: str, intensity: int = 4) -> SynthScan:
        """One static scan, BU-3DFE style.

        Args:
            subject: 0-based subject index.
            label: ``"neutral"``, an emotion of `EMOTIONS` or a compound label (evaluation only).
            intensity: 1..len(intensity_levels) (ignored, and reported as 0, for neutral).

        Returns:
            A :class:`SynthScan`: vertices (N, 3) float32 mm, faces (M, 3) int64, colors, uv, metadata.
        """
        intensity = self._check_scan(label, intensity)
        s = self.subject(subject)
        key = self._scan_key(s, label, intensity)
        rng = np.random.default_rng(key)
        v, expression = self._scan_shape(s, label, intensity, rng)
        parts = self._parts(s.face_model)
        v, faces, colors, uv, keep = self._capture(v, s, rng, parts)
        meta = self._metadata(s, label, expression)
        scan = SynthScan(
            vertices=v,
            faces=faces,
            colors=colors,
            uv=uv,
            subject=s,
            label=label,
            intensity=intensity,
            metadata=meta,
        )
        if self.config.realism is None:
            return scan
        (real,), kinds = self._realism([scan.to_scan()], key, parts, keep)
        return dataclasses.replace(
            scan, vertices=real.vertices, faces=real.faces, colors=real.colors, uv=real.uv, realism=kinds
        )

    def sample_metadata(self, subject: int, label: str, intensity: int | None = None) -> dict:
        """A sample's metadata without generating its geometry: the subject's (synthetic demographics, face
        model, licence), the expression path, ``evaluation_only``, and for action units the variant, its code
        and the AU weights (a sequence's: at its apex, before the apex intensity ``apex`` scales them, with each
        AU's time shift in seconds and the number of blinks). `intensity` None: the sequence's."""
        if intensity is not None:
            intensity = self._check_scan(label, intensity)
            s = self.subject(subject)
            return self._metadata(
                s,
                label,
                self._scan_expression(
                    s, label, intensity, np.random.default_rng(self._scan_key(s, label, intensity))
                ),
            )
        return self._sequence_metadata(self._sequence_plan(subject, label), label)

    def _sequence_key(self, subject: int, label: str, stream: int) -> list[int]:
        return [self.config.seed, _KIND_SEQUENCE, subject, _sequence_label_number(label), stream]

    def _sequence_rng(self, subject: int, label: str, stream: int) -> np.random.Generator:
        return np.random.default_rng(self._sequence_key(subject, label, stream))

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
        tremor = 1.0 + 0.03 * np.sin(
            2 * np.pi * rng.uniform(0.5, 1.5) * t / cfg.fps + rng.uniform(0, 2 * np.pi)
        )
        weights = (apex * np.minimum(onset, offset) * tremor).astype(np.float32)
        phases = {
            "onset": int(bounds[0]),
            "apex": int(bounds[1]),
            "offset": int(bounds[2]),
            "neutral": int(bounds[3]),
            "frames": int(bounds[4]),
        }
        return weights, phases

    def _sequence_plan(self, subject: int, label: str) -> _SequencePlan:
        """The expression and timing of a sequence, and its capture stream positioned after the expression."""
        s = self.subject(subject)
        weights, phases = self.sequence_timing(subject, label)
        key = self._sequence_key(subject, label, 1)
        aus = self.uses_aus(s, label)
        key = [*key, _STREAM_AUS] if aus else key
        rng = np.random.default_rng(key)
        expression = self._expression(s, label, 1.0, rng, sequence=True)
        if not aus:
            return _SequencePlan(s, expression, weights, phases, rng, key)
        shifts, blinks = self._au_timing(subject, label, expression.sample, len(weights))
        return _SequencePlan(s, expression, weights, phases, rng, key, shifts, blinks)

    def _au_timing(
        self, subject: int, label: str, sample: ExpressionSample, total: int
    ) -> tuple[dict, np.ndarray]:
        """Each AU's time shift in seconds (its whole curve moves: AUs start and end at slightly different
        times) and the blink track (total,) of an action-unit sequence (blinks at `blink_rate`, 0.2-0.35 s)."""
        cfg = self.config
        rng = self._sequence_rng(subject, label, _STREAM_TIMING)
        shifts = {au: float(rng.normal(0, cfg.au_timing_jitter)) for au in sorted(sample.au_weights)}
        t = np.arange(total) / cfg.fps
        blinks = np.zeros(total, np.float32)
        for _ in range(rng.poisson(cfg.blink_rate * total / cfg.fps)):
            centre, half, peak = rng.uniform(0, t[-1]), rng.uniform(0.1, 0.175), rng.uniform(0.8, 1.0)
            blinks = np.maximum(
                blinks, (peak * _smoothstep(1.0 - np.abs(t - centre) / half)).astype(np.float32)
            )
        return shifts, blinks

    def _sequence_metadata(self, plan: _SequencePlan, label: str) -> dict:
        meta = self._metadata(plan.subject, label, plan.expression)
        meta["apex"] = round(float(plan.weights.max(initial=0.0)), 4)
        if plan.blinks is not None:
            meta["au_shift_s"] = {au: round(t, 4) for au, t in plan.shifts.items()}
            rising = np.diff((plan.blinks > 0).astype(int), prepend=0) == 1
            meta["blinks"] = int(rising.sum())
        return meta

    def _frame_displacements(self, plan: _SequencePlan, frame_indices: np.ndarray) -> np.ndarray:
        """(T, N, 3) expression displacement of the chosen frames: v1's one displacement scaled by the envelope,
        or each AU following the envelope shifted by its own time shift, plus the blinks."""
        s, expression, weights = plan.subject, plan.expression, plan.weights
        if expression.sample is None:
            d = self._displacement(expression.blendshapes, expression.asymmetry, s.face_model)
            return weights[frame_indices, None, None] * d[None]
        t = np.arange(len(weights), dtype=np.float64)
        apex = expression.sample.au_weights
        envelopes = {au: np.interp(t - plan.shifts[au] * self.config.fps, t, weights) for au in apex}
        out = []
        for f in frame_indices:
            aus = {au: w * float(envelopes[au][f]) for au, w in apex.items()}
            if plan.blinks[f] > 0:
                aus[_BLINK] = max(aus.get(_BLINK, 0.0), float(plan.blinks[f]))
            out.append(self._expression_displacement(s, expression, aus))
        n = len(self.identity_shape(s.index))
        return np.stack(out).astype(np.float32) if out else np.zeros((0, n, 3), np.float32)

    def _sequence_pose(self, rng: np.random.Generator, s: SynthSubject, total: int) -> tuple:
        """Head motion (total, 6): a base pose plus a sum of two slow sinusoids per angle/axis over the whole
        sequence (evaluated at the chosen frames, so subsampling does not change the motion); the base pose
        and the position."""
        cfg = self.config
        t = np.arange(total)[:, None] / cfg.fps
        freq, phase = rng.uniform(0.1, 0.6, (2, 6)), rng.uniform(0, 2 * np.pi, (2, 6))
        motion = (
            cfg.head_motion
            * 0.5
            * (np.sin(2 * np.pi * freq[0] * t + phase[0]) + np.sin(2 * np.pi * freq[1] * t + phase[1]))
        )
        base = rng.normal(0, cfg.pose_jitter)
        shift = s.offset + rng.normal(0, cfg.translation_jitter, 3).astype(np.float32)
        return motion, base, shift

    def sequence(
        self, subject: int, label: str, num_frames: int | None = None, frame_indices=None
    ) -> SynthSequence:
        """One 4D sequence, BU-4DFE style: neutral -> onset -> apex -> offset -> neutral at `fps`, with
        subject-specific timing and a small smooth head motion. Topology, crop and holes are fixed for the
        sequence; scanner noise is drawn per frame. With action units each AU has its own time shift and the
        face blinks (ICT FaceKit) on its own time.

        Args:
            subject: 0-based subject index.
            label: an emotion of `EMOTIONS`, ``"neutral"`` or a compound label.
            num_frames: generate only this many frames evenly spread over the sequence (for dynamic
                images: rendering every frame is not needed), or None for all.
            frame_indices: explicit frame indices instead (overrides `num_frames`).

        Returns:
            A :class:`SynthSequence` with frames (T, N, 3).
        """
        plan = self._sequence_plan(subject, label)
        total = len(plan.weights)
        frame_indices = _frame_indices(total, num_frames, frame_indices)
        s, rng, parts = plan.subject, plan.rng, self._parts(plan.subject.face_model)
        shape = self.identity_shape(subject)
        subdivide, faces = self._topology(rng, parts)
        keep = self._keep_mask(self._densify(shape, subdivide), rng, parts.nose_index)
        motion, base, shift = self._sequence_pose(rng, s, total)
        gain = np.reshape(self._expression_gain(s, label), (1, -1, 1))
        frames = shape[None] + gain * self._frame_displacements(plan, frame_indices)  # (T, N, 3)
        frames = self._densify(frames, subdivide)
        rots = _rotations(base + motion[frame_indices, :3])  # (T, 3, 3)
        frames = (
            np.einsum("tnj,tij->tni", frames - _HEAD_CENTRE, rots)
            + _HEAD_CENTRE
            + shift
            + motion[frame_indices, None, 3:]
        )
        # per-frame noise from per-frame streams, so a frame's noise does not depend on which frames are drawn
        frames = frames.astype(np.float32)
        for k, i in enumerate(frame_indices):
            frames[k] = self._scanner_noise(frames[k], self._sequence_rng(subject, label, 100 + int(i)))
        colors = self._colors(s, frames.shape[1], rng)
        frames, faces, colors, uv = _subset(keep, frames, faces, colors, self._uv(subdivide, parts))
        seq = SynthSequence(
            frames=frames.astype(np.float32), faces=faces, colors=colors, uv=uv, subject=s, label=label,
            weights=plan.weights[frame_indices], phases=plan.phases, frame_indices=frame_indices,
            num_frames_total=total, fps=self.config.fps, metadata=self._sequence_metadata(plan, label),
        )  # fmt: skip
        if self.config.realism is not None and len(frame_indices):
            seq.scans, seq.realism = self._realism(seq.to_scans(), plan.key, parts, keep)
        return seq

    # --- listings -------------------------------------------------------------------------------------------

    @property
    def static_labels(self) -> tuple[str, ...]:
        """The static set's labels: neutral, the six emotions, and the compound labels with ``compound``."""
        return ("neutral", *EMOTIONS, *(COMPOUND_LABELS if self.config.compound else ()))

    @property
    def sequence_labels(self) -> tuple[str, ...]:
        """The 4D set's labels: the six emotions, neutral with ``neutral``, the compounds with ``compound``."""
        cfg = self.config
        return (*EMOTIONS, *(("neutral",) if cfg.neutral else ()), *(COMPOUND_LABELS if cfg.compound else ()))

    def static_items(self) -> list[dict]:
        """Every static scan as a dict (subject index, subject_id, label, intensity, metadata): 25 per
        subject, neutral first, BU-3DFE order; then, with ``compound``, one per compound label at the top
        intensity."""
        top = len(self.config.intensity_levels)
        items = []
        for i in range(self.config.num_subjects):
            s = self.subject(i)
            items.append(_item(s, "neutral", 0))
            for label in EMOTIONS:
                for level in range(1, top + 1):
                    items.append(_item(s, label, level))
            items += [_item(s, label, top) for label in self.static_labels[7:]]
        return self._only(items)

    def sequence_items(self) -> list[dict]:
        """Every 4D sequence as a dict: 6 per subject (+ neutral, + the compounds when asked)."""
        return self._only(
            [_item(self.subject(i), label, None) for i in range(self.config.num_subjects) for label in self.sequence_labels]
        )

    def _only(self, items: list[dict]) -> list[dict]:
        """`items` of the labels `config.only_labels` names (all without it)."""
        keep = self.config.only_labels
        return items if keep is None else [it for it in items if it["label"] in keep]


def _item(s: SynthSubject, label: str, intensity: int | None) -> dict:
    return {
        "subject_index": s.index, "subject": s.subject_id, "label": label, "intensity": intensity, **s.metadata,
        "evaluation_only": label in COMPOUND_LABELS,
    }  # fmt: skip


def _subset(keep: np.ndarray, v: np.ndarray, faces: np.ndarray, colors: np.ndarray, uv: np.ndarray):
    """Drop the vertices not in `keep` (N,) and the faces touching them; v may be (N, 3) or (T, N, 3)."""
    remap = np.cumsum(keep) - 1
    f = faces[keep[faces].all(axis=1)]
    return np.ascontiguousarray(v[..., keep, :]), remap[f].astype(np.int64), colors[keep], uv[keep]


def synth_root_readme(config: SynthConfig) -> str:
    """The README written at the root of every generated tree (licence and synthetic-metadata notice)."""
    if config.face_model == "sfm":
        source = (
            "SynthFER-3D: synthetic 3D/4D facial expression scans generated by AffectVLM from the Surrey Face Model.\n"
            "The face model is free for non-commercial use only (research and teaching); so are these files.\n"
        )
    elif config.face_model == "ict":
        source = (
            "SynthFER-3D: synthetic 3D/4D facial expression scans generated by AffectVLM from the ICT FaceKit\n"
            "(USC Institute for Creative Technologies). The face model is MIT-licensed; so are these files.\n"
        )
    else:
        source = (
            "SynthFER-3D: synthetic 3D/4D facial expression scans generated by AffectVLM from two face models:\n"
            "the even-numbered subjects (0, 2, ...) from the Surrey Face Model, free for non-commercial use only\n"
            "(research and teaching), and the odd-numbered ones from the ICT FaceKit (MIT). The set as a whole is\n"
            "for non-commercial use only; each sample's metadata names its face model and licence.\n"
        )
    return source + (
        "Gender, age group and ethnicity are drawn at random and independently of the geometry: they are\n"
        "synthetic and carry no information about the faces.\n"
        f"Config: {config.to_dict()}\n"
    )


def realism_preset(name: str):
    """A scanner-realism setting by name: ``off`` (None), ``on`` (every kind at
    :class:`affectvlm.data.realism.RealismConfig`'s probabilities), ``surface`` (holes, boundary, density,
    noise and spikes only: meshes in the scanner's own frame and units), ``scene`` (``on`` with a body below
    every face) or ``sampled`` (``on`` with half the point clouds drawn over the surface, not the vertices)."""
    if name not in REALISM_PRESETS:
        raise ValueError(f"unknown realism preset {name!r}; choose from {list(REALISM_PRESETS)}")
    if name == "off":
        return None
    from .realism import RealismConfig

    return RealismConfig(**REALISM_PRESETS[name])


REALISM_PRESETS: dict[str, dict | None] = {
    "off": None,
    "on": {},
    "surface": {"p_point_cloud": 0.0, "p_turn": 0.0, "p_axes": 0.0, "p_offset": 0.0, "p_units": 0.0},
    "scene": {"p_scene": 1.0},
    "sampled": {"sampled": 0.5},
}


# --- writing dataset-shaped trees -------------------------------------------------------------------------

TREE_LAYOUTS = ("bu3dfe", "bu4dfe", "bosphorus", "bp4d")
# BP4D tasks that elicit one of the six emotions (the default map of affectvlm.data.datasets.BP4D_TASKS)
_BP4D_TASK_OF = {
    "happiness": "T1",
    "sadness": "T2",
    "surprise": "T3",
    "fear": "T5",
    "anger": "T7",
    "disgust": "T8",
}


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
    return np.clip(subject.skin.astype(np.float32) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(
        np.uint8
    )


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
    ict=None,
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
        sfm, ict: the face models (loaded, a folder, or None to find them), each loaded only when used.

    Labels a layout has no name for (the compound expressions; neutral sequences) are not written: they exist
    in the render cache only. Realism is refused for ``bosphorus``: a range grid is the scanner's own frame.

    Returns:
        The number of scan files written.
    """
    from tqdm.auto import tqdm

    if layout not in TREE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {TREE_LAYOUTS}")
    gen = SynthFER3D(config, sfm, ict)
    if layout == "bosphorus" and gen.config.realism is not None:
        raise ValueError(
            "realism with the bosphorus layout: a range grid is the scanner's own frame; use a mesh layout"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README_SYNTHFER3D.txt").write_text(synth_root_readme(gen.config))
    if layout == "bu4dfe":
        (out / "BU_WrlViewer_V2").mkdir(exist_ok=True)
        (out / "BU_WrlViewer_V2" / "readme.txt").write_text("viewer program folder (skipped by the reader)\n")
    items = _tree_items(gen, layout, subjects, labels, intensities)
    static = layout in ("bu3dfe", "bosphorus")
    written = 0
    for it in tqdm(
        items, desc=f"SynthFER-3D -> {layout}", unit="scan" if static else "seq", disable=not progress
    ):
        s = gen.subject(it["subject_index"])
        label = it["label"]
        rng = np.random.default_rng(
            [gen.config.seed, 9, s.index, EMOTIONS.index(label) if label in EMOTIONS else 6]
        )
        texture = _texture(s, texture_size, rng)
        if layout == "bu3dfe":
            written += _write_bu3dfe(out, gen.scan(s.index, label, it["intensity"] or 1), texture)
        elif layout == "bosphorus":
            written += _write_bosphorus(
                out, gen.scan(s.index, label, it["intensity"] or 1), texture, grid_spacing
            )
        else:
            written += _write_frames(
                out, gen.sequence(s.index, label, num_frames=num_frames), layout, texture
            )
    return written


def _tree_items(gen: SynthFER3D, layout: str, subjects, labels, intensities) -> list[dict]:
    """The samples a layout holds: its subjects, the labels it has names for, the intensities asked for
    (Bosphorus: neutral and the top intensity)."""
    subjects = set(range(gen.num_subjects) if subjects is None else subjects)
    static = layout in ("bu3dfe", "bosphorus")
    items = [
        it
        for it in (gen.static_items() if static else gen.sequence_items())
        if it["subject_index"] in subjects
    ]
    if layout == "bosphorus":
        items = [it for it in items if it["intensity"] in (0, len(gen.config.intensity_levels))]
    named = {"bu3dfe": BU3DFE_CODES, "bu4dfe": BU4DFE_NAMES, "bosphorus": {**BOSPHORUS_CODES, "neutral": "N"}}
    items = [it for it in items if it["label"] in named.get(layout, _BP4D_TASK_OF)]
    items = [it for it in items if labels is None or it["label"] in set(labels)]
    return [it for it in items if intensities is None or it["intensity"] in (None, 0, *intensities)]


def _write_bu3dfe(out: Path, scan: SynthScan, texture: np.ndarray) -> int:
    """``<out>/F0001/F0001_AN01WH_F3D.wrl`` + ``.bmp`` texture + an 83-line ``.bnd``; returns 1."""
    from ..scan.writers import write_wrl

    s = scan.subject
    folder = out / s.subject_id
    folder.mkdir(exist_ok=True)
    stem = f"{s.subject_id}_{BU3DFE_CODES[scan.label]}{scan.intensity:02d}{s.ethnicity}"
    write_wrl(
        folder / f"{stem}_F3D.wrl", scan.to_scan().replace(texture=texture), texture_name=f"{stem}_F3D.bmp"
    )
    # landmarks beside the scan, as in the real tree (83 "index x y z" lines); the reader skips them
    idx = np.linspace(0, len(scan.vertices) - 1, 83).astype(int)
    rows = np.column_stack([idx, scan.vertices[idx]])
    np.savetxt(folder / f"{stem}_F3D.bnd", rows, fmt=["%d", "%.4f", "%.4f", "%.4f"])
    return 1


def _write_bosphorus(out: Path, scan: SynthScan, texture: np.ndarray, grid_spacing: float) -> int:
    """``<out>/bs000/bs000_E_ANGER_0.bnt`` (a range grid) + ``.png`` + ``.lm3``; returns 1."""
    from ..scan.bnt import write_bnt
    from ..scan.writers import write_texture

    index = scan.subject.index
    folder = out / f"bs{index:03d}"
    folder.mkdir(exist_ok=True)
    code = "N_N_0" if scan.label == "neutral" else f"E_{BOSPHORUS_CODES[scan.label]}_0"
    stem = f"bs{index:03d}_{code}"
    g = range_grid(scan.vertices, scan.faces, grid_spacing)
    nrows, ncols = g["z"].shape
    zmin = -1e9
    z = np.where(np.isnan(g["z"]), zmin, g["z"])
    u = np.tile(np.linspace(0, 1, ncols), (nrows, 1))
    v = np.tile(np.linspace(1, 0, nrows)[:, None], (1, ncols))  # row 0 is the chin = bottom of the image
    write_bnt(
        folder / f"{stem}.bnt", g["x"], g["y"], z, u, v, nrows, ncols, zmin=zmin, image_name=f"{stem}.png"
    )
    write_texture(folder / f"{stem}.png", texture)
    (folder / f"{stem}.lm3").write_text("# 3D Landmark File\r\n\r\n1 landmarks:\r\nNose tip\r\n0 0 0\r\n")
    return 1


def _write_frames(out: Path, seq: SynthSequence, layout: str, texture: np.ndarray) -> int:
    """``<out>/F001/Angry/000.wrl`` (+ ``.jpg``) frames (bu4dfe) or ``<out>/F001/T1/0000.obj`` (bp4d)."""
    from ..scan.writers import write_obj, write_wrl

    task = BU4DFE_NAMES[seq.label] if layout == "bu4dfe" else _BP4D_TASK_OF[seq.label]
    folder = out / seq.subject.bu4dfe_id / task
    folder.mkdir(parents=True, exist_ok=True)
    scans = seq.to_scans()
    for k, mesh in enumerate(scans):
        if layout == "bu4dfe":
            write_wrl(folder / f"{k:03d}.wrl", mesh.replace(texture=texture), texture_name=f"{k:03d}.jpg")
        else:
            write_obj(folder / f"{k:04d}.obj", mesh)
    return len(scans)
