"""Facial action units (FACS AUs): a catalogue, emotion recipes built from AUs, face-model bindings, a sampler.

Everything here is independent of any one face model:

* :data:`AU_CATALOGUE`: the AUs the project uses, with FACS number, FACS name and a plain-language
  description (the descriptions double as text prompts). Defined once; everything else refers to it.
* :data:`PROTOTYPES`: per label, several AU combinations ("variants") from the literature, each with its
  source (:data:`SOURCES`): EMFACS prototypes and major variants of the six basic emotions, neutral, and the
  15 compound expressions of Du, Tao & Martinez (2014), which are flagged evaluation-only.
* Bindings turn AU weights into a face model's expression-shape weights:
  :data:`ICT_BINDING` (ICT FaceKit, 53 ARKit shapes, the kit's own AU table plus documented nearest-shape
  choices for the AUs it lacks) and :data:`SFM_BINDING` (the Surrey Face Model's six whole-emotion shapes:
  only emotion-level control, see :class:`SFMBinding`).
* :func:`sample_expression`: a variant, per-AU intensity jitter, mild left/right asymmetry, a little of
  unrelated AUs and sometimes a blink; deterministic from the generator; every sample records the AU
  weights it used, per side, so that AU detection can be scored later.

AU weights are in [0, 1] (1 = FACS intensity E, maximum). In AU codes an intensity letter fixes the weight
(A 0.2, B 0.4, C 0.6, D 0.8, E 1.0: "5B" is a slight upper-lid raise); an AU without a letter is at full
weight, scaled by the sample's intensity. An ``L``/``R`` prefix makes an AU unilateral (the subject's own
left / right; ``+x`` is the subject's left in both face models).

Asymmetry convention: an AU at weight ``w`` with asymmetry ``a`` in [-1, 1] is ``w * (1 + a)`` on the left
side and ``w * (1 - a)`` on the right (each clipped to [0, 1]); ``a = 1`` is left only.

    >>> s = sample_expression("surprise", np.random.default_rng(0), intensity=0.8, variant=0)  # 1+2+5B+26
    >>> s.au_weights                 # {1: 0.88, 2: 0.74, 5: 0.39, 14: 0.004, 26: 0.72} (14: a distractor)
    >>> s.shape_weights(ICT_BINDING)  # {"browInnerUp_L": 0.9, "browInnerUp_R": 0.86, ..., "jawOpen": 0.25}
    >>> s.shape_weights(SFM_BINDING)  # {"anger": 0.04, "disgust": 0.03, "surprise": 0.96}
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .sfm import EXPRESSION_NAMES

__all__ = [
    "AU_CATALOGUE",
    "AU_NUMBERS",
    "BASIC_LABELS",
    "COMPOUND_LABELS",
    "ICT_AU_SHAPES",
    "ICT_BINDING",
    "LABELS",
    "NEUTRAL",
    "PROTOTYPES",
    "SFM_BINDING",
    "SOURCES",
    "ActionUnit",
    "AUSampleConfig",
    "ExpressionSample",
    "ICTBinding",
    "Prototype",
    "SFMBinding",
    "Variant",
    "au_description",
    "is_evaluation_only",
    "parse_au_code",
    "recorded_aus",
    "sample_expression",
]


# --- the catalogue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionUnit:
    """One FACS action unit: number, FACS name, plain-language description (usable as a text prompt)."""

    number: int
    name: str
    description: str


# FACS names after Ekman, Friesen & Hager (2002); descriptions are ours, one visible change each.
AU_CATALOGUE: dict[int, ActionUnit] = {
    au.number: au
    for au in (
        ActionUnit(1, "inner brow raiser", "inner corners of the eyebrows raised"),
        ActionUnit(2, "outer brow raiser", "outer parts of the eyebrows raised"),
        ActionUnit(4, "brow lowerer", "brows lowered and drawn together"),
        ActionUnit(5, "upper lid raiser", "upper eyelids raised, eyes wide open"),
        ActionUnit(6, "cheek raiser", "cheeks raised, bunching the skin below the eyes"),
        ActionUnit(7, "lid tightener", "eyelids tightened, eyes narrowed"),
        ActionUnit(9, "nose wrinkler", "nose wrinkled"),
        ActionUnit(10, "upper lip raiser", "upper lip raised"),
        ActionUnit(11, "nasolabial deepener", "furrows from the nose to the mouth corners deepened"),
        ActionUnit(12, "lip corner puller", "lip corners pulled up and back, as in a smile"),
        ActionUnit(14, "dimpler", "lip corners tightened inwards, dimples formed"),
        ActionUnit(15, "lip corner depressor", "lip corners pulled down"),
        ActionUnit(16, "lower lip depressor", "lower lip pulled down"),
        ActionUnit(17, "chin raiser", "chin raised, pushing the lower lip up"),
        ActionUnit(18, "lip pucker", "lips puckered forwards"),
        ActionUnit(20, "lip stretcher", "lips stretched sideways"),
        ActionUnit(22, "lip funneler", "lips funnelled outwards"),
        ActionUnit(23, "lip tightener", "lips tightened and narrowed"),
        ActionUnit(24, "lip pressor", "lips pressed together"),
        ActionUnit(25, "lips part", "lips parted"),
        ActionUnit(26, "jaw drop", "jaw dropped, mouth open"),
        ActionUnit(27, "mouth stretch", "mouth stretched wide open"),
        ActionUnit(28, "lip suck", "lips sucked in"),
        ActionUnit(29, "jaw thrust", "jaw pushed forwards"),
        ActionUnit(45, "blink", "eyes closed in a blink"),
    )
}
AU_NUMBERS: tuple[int, ...] = tuple(sorted(AU_CATALOGUE))
_BLINK = 45
_LEVELS = {"A": 0.2, "B": 0.4, "C": 0.6, "D": 0.8, "E": 1.0}


def au_description(au: int) -> str:
    """The plain-language description of AU `au` (e.g. 4 -> "brows lowered and drawn together")."""
    if au not in AU_CATALOGUE:
        raise KeyError(f"AU{au} is not in the catalogue: {AU_NUMBERS}")
    return AU_CATALOGUE[au].description


def recorded_aus(metadata: Mapping | None) -> dict[int, float] | None:
    """A sample's rendered AU weights from its metadata (``aus``, keys ``12``, ``"12"`` or ``"AU12"``), or None
    when it has none (SFM blendshape expressions) or only nominal ones (``aus_nominal``: the SFM's blend
    binding renders emotions, not those AUs). What AU training and AU evaluation score."""
    aus = (metadata or {}).get("aus")
    if not isinstance(aus, Mapping) or (metadata or {}).get("aus_nominal"):
        return None
    return {int(str(k).upper().removeprefix("AU")): float(v) for k, v in aus.items()}


def parse_au_code(code: str) -> tuple[tuple[int, float, str], ...]:
    """``"1+2+5B+R20+26"`` -> ((au, level, side), ...): level 1.0 unless a letter A-E gives it, side "" (both),
    "L" or "R". The empty string is no AU (neutral). Every AU must be in :data:`AU_CATALOGUE`."""
    out = []
    for token in filter(None, code.replace(" ", "").split("+")):
        m = re.fullmatch(r"([LR]?)(\d+)([A-E]?)", token)
        if m is None:
            raise ValueError(f"bad AU token {token!r} in {code!r}: expected e.g. 12, 5B, R20")
        au = int(m.group(2))
        if au not in AU_CATALOGUE:
            raise ValueError(f"AU{au} in {code!r} is not in the catalogue {AU_NUMBERS}")
        out.append((au, _LEVELS.get(m.group(3), 1.0), m.group(1)))
    if len({au for au, _, _ in out}) != len(out):
        raise ValueError(f"repeated AU in {code!r}")
    return tuple(out)


# --- emotion recipes -------------------------------------------------------------------------------------

SOURCES: dict[str, str] = {
    "EFH2002": (
        "Ekman, Friesen & Hager (2002), Facial Action Coding System: Investigator's Guide, Table 10-1 "
        "(EMFACS emotion predictions: prototypes and major variants; '*' any-intensity marks dropped, head "
        "and eye movements such as 54+64 not modelled, 'a or b' alternatives written out as separate variants)"
    ),
    "ME2008": "Matsumoto & Ekman (2008), Facial expression analysis, Scholarpedia 3(5):4237 (AU summary table)",
    "DTM2014": (
        "Du, Tao & Martinez (2014), Compound facial expressions of emotion, PNAS 111(15):E1454-E1462, Table 1: "
        "AUs used by more than 70% of the 230 subjects (reconstructed; check against the paper)"
    ),
    "DTM2014+": (
        "Du, Tao & Martinez (2014), Table 1: the core AUs plus one of the bracketed AUs that many (not all) "
        "subjects used, separating categories whose cores coincide (reconstructed; check against the paper)"
    ),
    "neutral": "no action unit active (the relaxed face, FACS AU0)",
}

NEUTRAL = "neutral"
BASIC_LABELS: tuple[str, ...] = EXPRESSION_NAMES  # the project's label order (affectvlm.data.synth.EMOTIONS)

# (label, AU code, source). Basic emotions: the EMFACS prototypes first, then major variants, then the
# common summary (ME2008) and the AUs Du et al. observed for the basic categories. Compound labels are
# Du et al.'s 15 categories. Variants of one label are distinct; labels may share a variant only in the
# literature's own overlaps (none here).
_RECIPES: tuple[tuple[str, str, str], ...] = (
    ("anger", "4+5+7+10+22+23+25", "EFH2002"),
    ("anger", "4+5+7+10+23+26", "EFH2002"),
    ("anger", "4+5+7+23+25", "EFH2002"),
    ("anger", "4+5+7+17+23", "EFH2002"),
    ("anger", "4+5+7+17+24", "EFH2002"),
    ("anger", "4+5+7+23", "EFH2002"),  # also ME2008
    ("anger", "4+5+7+24", "EFH2002"),
    ("anger", "4+7+17+23", "EFH2002"),  # major variant: a prototype without 5
    ("anger", "4+5+17+24", "EFH2002"),  # major variant: a prototype without 7
    ("anger", "4+7+24", "DTM2014"),
    ("disgust", "9", "EFH2002"),
    ("disgust", "9+16+15", "EFH2002"),  # "9+16+15,26": read as 9+16 with 15 or 26
    ("disgust", "9+16+26", "EFH2002"),
    ("disgust", "9+17", "EFH2002"),
    ("disgust", "10", "EFH2002"),
    ("disgust", "10+16+25", "EFH2002"),
    ("disgust", "10+16+26", "EFH2002"),
    ("disgust", "10+17", "EFH2002"),
    ("disgust", "9+15+16+26", "ME2008"),  # ME2008 9+15+16, with the jaw drop of the EMFACS row
    ("disgust", "9+10+17", "DTM2014"),
    ("fear", "1+2+4+5+20+25", "EFH2002"),
    ("fear", "1+2+4+5+20+26", "EFH2002"),
    ("fear", "1+2+4+5+20+27", "EFH2002"),
    ("fear", "1+2+4+5+25", "EFH2002"),
    ("fear", "1+2+4+5+R20+25", "EFH2002"),  # "L or R20": the sampler mirrors unilateral AUs at random
    ("fear", "1+2+4+5", "EFH2002"),
    ("fear", "5+20+25", "EFH2002"),
    ("fear", "1+2+4+5+7+20+26", "ME2008"),
    ("fear", "1+4+20+25", "DTM2014"),
    ("happiness", "6+12", "EFH2002"),
    ("happiness", "12D", "EFH2002"),  # "12C/D": a marked smile without the cheek raiser
    ("happiness", "12+25", "DTM2014"),
    ("happiness", "6+12+25", "DTM2014+"),
    ("sadness", "1+4+11+15B", "EFH2002"),
    ("sadness", "1+4+15", "EFH2002"),  # also ME2008
    ("sadness", "6+15", "EFH2002"),
    ("sadness", "1+4+11", "EFH2002"),
    ("sadness", "1+4+15B+17", "EFH2002"),
    ("sadness", "11+15B", "EFH2002"),
    ("sadness", "11+17", "EFH2002"),
    ("sadness", "4+15", "DTM2014"),
    ("surprise", "1+2+5B+26", "EFH2002"),  # also ME2008
    ("surprise", "1+2+5B+27", "EFH2002"),
    ("surprise", "1+2+5B", "EFH2002"),
    ("surprise", "1+2+26", "EFH2002"),
    ("surprise", "1+2+27", "EFH2002"),
    ("surprise", "5B+26", "EFH2002"),
    ("surprise", "1+2+25+26", "DTM2014"),
    (NEUTRAL, "", "neutral"),
    ("happily_surprised", "1+2+12+25", "DTM2014"),
    ("happily_surprised", "1+2+12+25+26", "DTM2014+"),
    ("happily_disgusted", "10+12+25", "DTM2014"),
    ("sadly_fearful", "1+4+20+25", "DTM2014"),
    ("sadly_angry", "4+7+15", "DTM2014"),
    ("sadly_surprised", "1+4+25+26", "DTM2014"),
    ("sadly_disgusted", "4+10", "DTM2014"),
    ("fearfully_angry", "4+20+25", "DTM2014"),
    ("fearfully_surprised", "1+2+5+20+25", "DTM2014"),
    ("fearfully_disgusted", "1+4+10+20+25", "DTM2014"),
    ("angrily_surprised", "4+25+26", "DTM2014"),
    ("angrily_disgusted", "4+10+17", "DTM2014"),
    ("angrily_disgusted", "4+9+10+17", "DTM2014+"),
    ("disgustedly_surprised", "1+2+5+10", "DTM2014"),
    ("appalled", "4+9+10", "DTM2014+"),  # core 4+10 (as sadly disgusted and hatred) + 9
    ("hatred", "4+7+10", "DTM2014+"),  # core 4+10 + 7
    ("awed", "1+2+5+25", "DTM2014"),
    ("awed", "1+2+5+25+26", "DTM2014+"),
)


@dataclass(frozen=True)
class Variant:
    """One AU combination of a label: its code (``"1+2+5B+26"``), source key of :data:`SOURCES`, and the
    parsed ``aus``: ((au, level, side), ...)."""

    code: str
    source: str
    aus: tuple[tuple[int, float, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aus", parse_au_code(self.code))

    @property
    def au_set(self) -> frozenset[int]:
        return frozenset(au for au, _, _ in self.aus)


@dataclass(frozen=True)
class Prototype:
    """A label's recipes. ``evaluation_only``: a compound expression (Du et al. 2014), for testing a model's
    generalisation, never for training labels."""

    label: str
    variants: tuple[Variant, ...]
    evaluation_only: bool = False

    def mean_weights(self) -> dict[int, float]:
        """The AU weights averaged over the variants (levels, both sides): the label's typical AU content."""
        total: dict[int, float] = {}
        for v in self.variants:
            for au, level, _ in v.aus:
                total[au] = total.get(au, 0.0) + level / len(self.variants)
        return dict(sorted(total.items()))


def _build_prototypes() -> dict[str, Prototype]:
    grouped: dict[str, list[Variant]] = {}
    for label, code, source in _RECIPES:
        grouped.setdefault(label, []).append(Variant(code, source))
    return {
        label: Prototype(label, tuple(vs), evaluation_only=label not in (*BASIC_LABELS, NEUTRAL))
        for label, vs in grouped.items()
    }


PROTOTYPES: dict[str, Prototype] = _build_prototypes()
COMPOUND_LABELS: tuple[str, ...] = tuple(k for k, p in PROTOTYPES.items() if p.evaluation_only)
LABELS: tuple[str, ...] = (*BASIC_LABELS, NEUTRAL, *COMPOUND_LABELS)


def is_evaluation_only(label: str) -> bool:
    """True for the compound expressions: evaluation data only."""
    return _prototype(label).evaluation_only


def _prototype(label: str) -> Prototype:
    if label not in PROTOTYPES:
        raise ValueError(f"unknown label {label!r}; choose from {LABELS}")
    return PROTOTYPES[label]


# --- face-model bindings ---------------------------------------------------------------------------------

Asymmetry = float | Mapping[int, float]


def _sides(w: float, a: float) -> tuple[float, float]:
    """Weight `w` with asymmetry `a` -> (left, right), each clipped to [0, 1]."""
    a = min(max(a, -1.0), 1.0)
    return min(max(w * (1 + a), 0.0), 1.0), min(max(w * (1 - a), 0.0), 1.0)


def _asym(asymmetry: Asymmetry | None, au: int) -> float:
    if asymmetry is None:
        return 0.0
    return float(asymmetry.get(au, 0.0)) if isinstance(asymmetry, Mapping) else float(asymmetry)


# AU -> ((ICT shape, gain), ...); "{side}" stands for L and R, each driven by its own side's AU weight;
# a shape without it (a midline shape) takes the mean of the two sides. Gains of 1.0 without a comment are
# the kit's own table (../shared/ict/README.md); the others are our nearest-shape choices for AUs the kit
# does not list, chosen from the shapes' measured landmark motion (mm at weight 1, ICT neutral).
ICT_AU_SHAPES: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("browInnerUp_{side}", 1.0),),
    2: (("browOuterUp_{side}", 1.0),),
    # the kit's browDown at weight 1 lowers the inner brows only ~2.3 mm, too little to read as a frown at the
    # renders' size; FACS AU4 at E lowers and draws them together by about twice that: the shape at up to 2x
    4: (("browDown_{side}", 2.0),),
    5: (("eyeWide_{side}", 1.0),),
    6: (("cheekSquint_{side}", 1.0),),
    7: (("eyeSquint_{side}", 1.0),),
    9: (("noseSneer_{side}", 1.0),),
    10: (("mouthShrugUpper", 1.0),),  # the kit's choice (many ARKit tables use mouthUpperUp for AU10 instead)
    11: (("mouthUpperUp_{side}", 1.0),),
    12: (("mouthSmile_{side}", 1.0),),
    14: (("mouthDimple_{side}", 1.0),),
    15: (("mouthFrown_{side}", 1.0),),
    16: (("mouthLowerDown_{side}", 1.0),),
    17: (("mouthShrugLower", 1.0),),
    18: (("mouthPucker", 1.0),),
    20: (("mouthStretch_{side}", 1.0),),
    22: (("mouthFunnel", 1.0),),
    # not in the kit: lips pressed (mouthPress, AU24's shape, weaker) and a little rolled in, which thins the
    # visible red of the lips as the tightener does
    23: (("mouthPress_{side}", 0.6), ("mouthRollLower", 0.2), ("mouthRollUpper", 0.2)),
    24: (("mouthPress_{side}", 1.0),),
    # not in the kit: 25/26/27 are one jaw shape at increasing strength (jawOpen 1.0 drops the chin ~28 mm);
    # lips part: a slight opening (~6 mm at the lower lip) led by the lower lip
    25: (("jawOpen", 0.1), ("mouthLowerDown_{side}", 0.4)),
    26: (("jawOpen", 0.35),),  # not in the kit: jaw drop, chin ~10 mm down
    27: (("jawOpen", 1.0),),
    28: (("mouthRollLower", 1.0), ("mouthRollUpper", 1.0)),
    29: (("jawForward", 1.0),),
    45: (("eyeBlink_{side}", 1.0),),
}


@dataclass(frozen=True)
class ICTBinding:
    """AU weights -> ICT FaceKit expression-shape weights (ARKit names with _L/_R), through :data:`ICT_AU_SHAPES`.

    Contributions of several AUs to one shape add up; every shape weight is clipped to [0, 1], or to [0, g]
    for a shape the table drives with a gain g > 1 (an AU the kit's shape renders too weakly).
    """

    table: Mapping[int, tuple[tuple[str, float], ...]] = field(default_factory=lambda: ICT_AU_SHAPES)
    name: str = "ict"

    @property
    def shape_names(self) -> tuple[str, ...]:
        """Every shape the table uses, sorted."""
        names = {n.format(side=s) for entries in self.table.values() for n, _ in entries for s in "LR"}
        return tuple(sorted(names))

    def shape_weights(
        self, au_weights: Mapping[int, float], asymmetry: Asymmetry | None = 0.0
    ) -> dict[str, float]:
        """AU weights (bilateral, [0, 1]) and asymmetry (one number or per AU) -> {shape: weight}, nonzero only."""
        out: dict[str, float] = {}
        for au, w in au_weights.items():
            if au not in self.table:
                raise KeyError(f"AU{au} has no ICT binding")
            left, right = _sides(float(w), _asym(asymmetry, au))
            for pattern, gain in self.table[au]:
                if "{side}" in pattern:
                    for side, ws in (("L", left), ("R", right)):
                        out[pattern.format(side=side)] = out.get(pattern.format(side=side), 0.0) + gain * ws
                else:
                    out[pattern] = out.get(pattern, 0.0) + gain * (left + right) / 2
        return {k: min(v, self._caps.get(k, 1.0)) for k, v in sorted(out.items()) if v > 0}

    @cached_property
    def _caps(self) -> dict[str, float]:
        """{shape: its largest gain in the table}, for shapes driven with a gain above 1."""
        caps: dict[str, float] = {}
        for entries in self.table.values():
            for pattern, gain in entries:
                for side in "LR":
                    name = pattern.format(side=side)
                    caps[name] = max(caps.get(name, 1.0), gain)
        return {k: v for k, v in caps.items() if v > 1.0}

    def weight_vector(
        self, names: Sequence[str], au_weights: Mapping[int, float], asymmetry: Asymmetry | None = 0.0
    ) -> np.ndarray:
        """The shape weights as a (len(names),) float32 vector in the model's order (the npz's
        ``expression_names``); a bound shape missing from `names` is an error."""
        weights = self.shape_weights(au_weights, asymmetry)
        index = {str(n): i for i, n in enumerate(names)}
        missing = sorted(set(weights) - set(index))
        if missing:
            raise KeyError(f"shapes {missing} are not in the model's expression names")
        vec = np.zeros(len(names), np.float32)
        for name, w in weights.items():
            vec[index[name]] = w
        return vec


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| over x >= 0, exactly, by trying every support set (a has a handful of columns)."""
    n = a.shape[1]
    best, best_err = np.zeros(n), float(np.linalg.norm(b))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if (x < 0).any():
                continue
            err = float(np.linalg.norm(a[:, cols] @ x - b))
            if err < best_err - 1e-12:
                best, best_err = np.zeros(n), err
                best[list(cols)] = x
    return best


@dataclass(frozen=True)
class SFMBinding:
    """AU weights -> the Surrey Face Model's six whole-expression blendshape weights. Emotion-level control only.

    The SFM has no per-AU shapes: each of its six blendshapes (anger ... surprise) is a whole posed emotion,
    symmetric, and they do not decompose cleanly into AUs. Measured (ICT neutral aligned to the SFM mean on
    the iBUG landmarks, nearest-vertex correspondence, each SFM blendshape fitted by non-negative least
    squares to the catalogue's AUs rendered through :data:`ICT_AU_SHAPES`): 37-57% of each blendshape's
    displacement stays unexplained and the fitted AU content is noisy (surprise comes out as 2+15+17+27, say).
    Each blendshape's fitted content is still nearest (cosine) to its own emotion's literature content, but
    by small margins for some (happiness 0.49 vs disgust 0.46, sadness 0.59 vs anger 0.55, surprise 0.40 vs
    sadness 0.38); ``tests/test_data_aus.py`` repeats that measurement. So the binding does not pretend to
    render AUs. It takes each blendshape's AU content to be its emotion's typical AU content, the mean AU
    weights over that emotion's variants (:meth:`Prototype.mean_weights`), and returns the non-negative
    least-squares combination of the six whose AU content is nearest to the requested AUs: every
    basic-emotion variant gives its own emotion the largest weight, a compound gives a mix of its
    components, and an AU no emotion uses is dropped.

    Consequences, stated once: (1) AU labels of SFM renders are nominal; :meth:`realised_aus` gives the AU
    content the chosen blend stands for (use it, not the requested AUs, to score AU detection on SFM data);
    (2) ``asymmetry`` is ignored (the shapes are whole-face; the generator's vertex-level left/right gain,
    ``SynthConfig.asymmetry``, is the SFM's only asymmetry); (3) weights are clipped to [0, 1].
    """

    names: tuple[str, ...] = EXPRESSION_NAMES
    name: str = "sfm"

    @cached_property
    def content(self) -> np.ndarray:
        """(len(AU_NUMBERS), 6): column k = the AU content assumed for blendshape k."""
        cols = [[PROTOTYPES[n].mean_weights().get(au, 0.0) for au in AU_NUMBERS] for n in self.names]
        return np.array(cols, np.float64).T

    @property
    def shape_names(self) -> tuple[str, ...]:
        return self.names

    def shape_weights(
        self, au_weights: Mapping[int, float], asymmetry: Asymmetry | None = None
    ) -> dict[str, float]:
        """AU weights -> {emotion blendshape: weight in [0, 1]}, nonzero only; `asymmetry` is ignored."""
        del asymmetry  # see the class docstring
        target = np.array([float(au_weights.get(au, 0.0)) for au in AU_NUMBERS])
        unknown = set(au_weights) - set(AU_NUMBERS)
        if unknown:
            raise KeyError(f"AUs {sorted(unknown)} are not in the catalogue")
        x = np.clip(_nnls(self.content, target), 0.0, 1.0)
        return {n: float(w) for n, w in zip(self.names, x) if w > 1e-9}

    def realised_aus(self, shape_weights: Mapping[str, float]) -> dict[int, float]:
        """The AU content a blend stands for (the assumed content of each shape, weighted), nonzero only."""
        x = np.array([float(shape_weights.get(n, 0.0)) for n in self.names])
        return {au: float(w) for au, w in zip(AU_NUMBERS, self.content @ x) if w > 1e-9}


ICT_BINDING = ICTBinding()
SFM_BINDING = SFMBinding()


# --- sampling --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AUSampleConfig:
    """How :func:`sample_expression` varies a recipe. Standard deviations are of normal draws."""

    intensity_jitter: float = 0.15
    """Std of the log of each AU's multiplicative intensity jitter."""
    asymmetry: float = 0.1
    """Std of the sample's face-wide left/right asymmetry (see the module docstring's convention)."""
    au_asymmetry: float = 0.05
    """Std of each AU's own asymmetry around the face-wide one."""
    mirror_unilateral: bool = True
    """Swap the side of unilateral AUs (``R20``) in half of the samples ("L or R" in the literature)."""
    distractors: float = 0.5
    """Mean (Poisson) number of unrelated AUs added at a low weight (nobody moves only the recipe's muscles)."""
    distractor_weight: float = 0.12
    """Their weight is uniform in (0, distractor_weight), whatever the intensity."""
    blink_prob: float = 0.08
    """Probability of a blink (AU45) caught in the scan (never with AU5, which raises the lid a blink lowers)."""
    blink_weight: tuple[float, float] = (0.3, 1.0)
    """Range of the blink's weight."""

    def __post_init__(self) -> None:
        for name in ("intensity_jitter", "asymmetry", "au_asymmetry", "distractors", "distractor_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.blink_prob <= 1:
            raise ValueError(f"blink_prob must be a probability, got {self.blink_prob}")
        lo, hi = self.blink_weight
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"blink_weight must be a range within [0, 1], got {self.blink_weight}")

    def replace(self, **changes) -> AUSampleConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ExpressionSample:
    """One sampled expression, with the AU weights it actually used.

    Attributes:
        label: a label of :data:`LABELS`. variant: index into ``PROTOTYPES[label].variants``; code, source:
            that variant's. intensity: the requested intensity. evaluation_only: a compound label.
        left, right: {AU: weight in (0, 1]} on the subject's left / right side (recipe AUs, distractors and
            blink alike; ``recipe_aus`` says which came from the recipe).
    """

    label: str
    variant: int
    code: str
    source: str
    intensity: float
    evaluation_only: bool
    left: dict[int, float]
    right: dict[int, float]
    recipe_aus: frozenset[int]

    @property
    def au_weights(self) -> dict[int, float]:
        """{AU: mean of the two sides}, the bilateral weight."""
        aus = sorted(set(self.left) | set(self.right))
        return {au: (self.left.get(au, 0.0) + self.right.get(au, 0.0)) / 2 for au in aus}

    @property
    def asymmetry(self) -> dict[int, float]:
        """{AU: (left - right) / (left + right)}, so that ``_sides(au_weights[au], asymmetry[au])`` gives back
        the two sides."""
        out = {}
        for au, w in self.au_weights.items():
            out[au] = (self.left.get(au, 0.0) - self.right.get(au, 0.0)) / (2 * w) if w > 0 else 0.0
        return out

    def au_vector(self, side: str = "mean") -> np.ndarray:
        """(len(AU_NUMBERS),) float32 weights in catalogue order; side "mean", "left" or "right"."""
        source = {"mean": self.au_weights, "left": self.left, "right": self.right}[side]
        return np.array([source.get(au, 0.0) for au in AU_NUMBERS], np.float32)

    def shape_weights(self, binding) -> dict[str, float]:
        """This sample's expression-shape weights for a face-model binding (:data:`ICT_BINDING`, ...)."""
        return binding.shape_weights(self.au_weights, self.asymmetry)

    def to_dict(self) -> dict:
        """JSON-ready record (AU keys as strings)."""
        return {
            "label": self.label, "variant": self.variant, "code": self.code, "source": self.source,
            "intensity": self.intensity, "evaluation_only": self.evaluation_only,
            "au_left": {str(k): round(v, 6) for k, v in self.left.items()},
            "au_right": {str(k): round(v, 6) for k, v in self.right.items()},
            "recipe_aus": sorted(self.recipe_aus),
        }  # fmt: skip


def sample_expression(
    label: str,
    rng: np.random.Generator,
    intensity: float = 1.0,
    config: AUSampleConfig | None = None,
    variant: int | None = None,
) -> ExpressionSample:
    """Draw one expression of `label`: a variant (uniform, or the given index), each AU at
    ``level * intensity * jitter`` with a mild left/right asymmetry, a few unrelated AUs at low weight, and
    sometimes a blink. Deterministic from `rng`'s state.

    Args:
        label: one of :data:`LABELS` (compound labels are allowed, and flagged evaluation-only).
        intensity: >= 0, scales the recipe's weights (1 = full; weights are clipped to 1).
    """
    cfg = config or AUSampleConfig()
    proto = _prototype(label)
    if intensity < 0:
        raise ValueError(f"intensity must be >= 0, got {intensity}")
    if variant is None:
        variant = int(rng.integers(len(proto.variants)))
    elif not 0 <= variant < len(proto.variants):
        raise IndexError(f"{label!r} has {len(proto.variants)} variants, not {variant}")
    chosen = proto.variants[variant]
    face_asym = float(rng.normal(0.0, cfg.asymmetry))
    mirror = -1.0 if cfg.mirror_unilateral and rng.random() < 0.5 else 1.0
    left: dict[int, float] = {}
    right: dict[int, float] = {}
    for au, level, side in chosen.aus:
        w = level * intensity * float(np.exp(rng.normal(0.0, cfg.intensity_jitter)))
        a = {"L": mirror, "R": -mirror}.get(side, face_asym + float(rng.normal(0.0, cfg.au_asymmetry)))
        left[au], right[au] = _sides(w, a)
    _add_extras(left, right, chosen.au_set, cfg, rng)
    keep = sorted(au for au in set(left) | set(right) if left.get(au, 0.0) > 0 or right.get(au, 0.0) > 0)
    return ExpressionSample(
        label=label,
        variant=variant,
        code=chosen.code,
        source=chosen.source,
        intensity=float(intensity),
        evaluation_only=proto.evaluation_only,
        left={au: left[au] for au in keep if left.get(au, 0.0) > 0},
        right={au: right[au] for au in keep if right.get(au, 0.0) > 0},
        recipe_aus=chosen.au_set,
    )


def _add_extras(
    left: dict[int, float],
    right: dict[int, float],
    recipe: frozenset[int],
    cfg: AUSampleConfig,
    rng: np.random.Generator,
) -> None:
    """Add the distractor AUs (not in the recipe, not the blink) and maybe a blink, in place; no blink
    when the recipe raises the upper lid (AU5)."""
    pool = [au for au in AU_NUMBERS if au not in recipe and au != _BLINK]
    count = min(int(rng.poisson(cfg.distractors)), len(pool))
    for au in sorted(int(x) for x in rng.choice(pool, size=count, replace=False)):
        w = float(rng.uniform(0.0, cfg.distractor_weight))
        left[au], right[au] = _sides(w, float(rng.normal(0.0, cfg.asymmetry)))
    if rng.random() < cfg.blink_prob and not recipe & {5, _BLINK}:
        w = float(rng.uniform(*cfg.blink_weight))
        left[_BLINK], right[_BLINK] = _sides(w, float(rng.normal(0.0, cfg.au_asymmetry)))
