"""Augmented textual prompts: training prompt sampling and the leakage-free inference prompt bank.

Training prompts are drawn from templates x an emotion lexicon x the sample's metadata when known (issue 5,
"Augmented textual prompts"; the paper gives each view of a sample its own prompt):

    bank = PromptBank(PromptConfig(seed=0))
    bank.sample(["happiness"], [{"gender": "F", "age": 34, "ethnicity": "AE", "intensity": 4}], num_views=3)
    # [['an adult Asian woman with a broad smile and raised cheeks.',
    #   'a face with smiling lips and crinkled eyes.',
    #   'a rendered face with an expression of extreme amusement.']]   (the words depend on the seed)
    bank.class_prompts(["anger", "happiness"], num_prompts=8)    # {label: 8 prompts}: class text embeddings
    inference_prompts(["happiness", "contempt"])                 # {label: prompts}: evaluation, no metadata

Training templates are `str.format` strings with these slots (at least one of the last three):
    {person}  a noun phrase with its article built from the metadata: "an elderly Black man", "a person"
    {adj}     an emotion adjective, graded by the intensity when known: "very angry", "angry"
    {noun}    an emotion noun, graded by the intensity when known: "slight anger", "anger"
    {action}  a short description of the facial action: "raised eyebrows and an open mouth"
Unknown metadata (missing key, None, NaN, "", "unknown") is left out of the phrase, and articles are fixed
afterwards ("a angry" -> "an angry"), so no prompt reads "a None person" or has a double space.

Action units: when a sample's metadata has "aus", its AU weights ({4: 0.8, 7: 0.5}, weights in [0, 1]), a
share `PromptConfig.au_prompt_prob` (0.3) of its training prompts are drawn from AU_TRAIN_TEMPLATES instead,
which describe the face by its 1 to `au_max_count` strongest active AUs in the plain words of
affectvlm.data.aus.AU_CATALOGUE and still name the emotion: "an adult woman with brows lowered and drawn
together and lips tightened and narrowed, looking furious." Without "aus" in the metadata the draws, and the
sampler's state after them, are exactly those of the bank before AU prompts existed. The inference bank never
sees AUs; `au_prompts()` gives separate, deterministic prompts per AU for scoring a scan against AU descriptions:

    au_prompts([4])   # {"AU4 brow lowerer": ["a face with brows lowered and drawn together.", ...]}

Open vocabulary: affectvlm.vocabulary.HELD_OUT_VOCABULARY lists, per emotion, words that no training prompt
contains ("livid", "heartbroken", "flabbergasted", ...), for testing generalisation to unseen words; it lives
outside this module so that evaluation code needs no training code, and tests/test_prompts.py enforces it.

Inference templates have the single slot {label} and are filled with the label's own words only: no metadata,
no lexicon synonym or facial-action description, no randomness. A label's inference prompts are therefore the
same whatever the seed, the sampling history, the other labels asked for, or the samples being scored, and
any label a user writes ("contempt", "a person who just won the lottery") gets prompts.

Distinct prompts per built-in emotion with the default config (`PromptBank.num_prompts`): without metadata
165-194; for one fully described sample (gender, age, ethnicity, intensity) 759-894 (neutral, which
ignores intensity, 263); over all built-in metadata values together 217,195-254,804 (neutral 17,707).
View phrases, when on, multiply these by 3. Three or more active AUs add 540-648 AU prompts to those of one
fully described sample (neutral 180).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .configuration_affectvlm import DEFAULT_VIEW_NAMES as _VIEW_NAMES
from .data.aus import AU_CATALOGUE, au_description

# ----------------------------------------------------------------------------------------------------------
# Built-in vocabulary
# ----------------------------------------------------------------------------------------------------------

TRAIN_TEMPLATES: tuple[str, ...] = (
    # adjective
    "a photo of a {adj} face.",
    "a 3D scan of a {adj} face.",
    "a rendered 3D face that looks {adj}.",
    "{person} who looks {adj}.",
    "{person} looking {adj}.",
    "{person} with a {adj} expression.",
    "a close-up of {person} feeling {adj}.",
    # noun
    "a face showing {noun}.",
    "a 3D scan of a face showing {noun}.",
    "an expression of {noun}.",
    "{person} showing {noun}.",
    "a rendered face with an expression of {noun}.",
    # facial action
    "a face with {action}.",
    "{person} with {action}.",
    "a 3D face with {action}, a sign of {noun}.",
    "{person} with {action}, looking {adj}.",
    "a face with {action} that looks {adj}.",
)

# Action-unit training templates: {aus} is the sample's strongest active AUs in plain words ("brows lowered and
# drawn together and eyelids tightened, eyes narrowed", from affectvlm.data.aus.AU_CATALOGUE); {person}, {adj}
# and {noun} are filled as in TRAIN_TEMPLATES. Every one names the emotion: in "sample" mode a sample gets a
# prompt per class, so an AU-only prompt would describe the face, truly, under a wrong class's name.
AU_TRAIN_TEMPLATES: tuple[str, ...] = (
    "a face with {aus}, looking {adj}.",
    "a {adj} face with {aus}.",
    "{person} with {aus}, looking {adj}.",
    "a 3D scan of a face with {aus}, a sign of {noun}.",
    "{person} showing {noun}: {aus}.",
    "a rendered face with {aus}, an expression of {noun}.",
)

# Inference templates of `au_prompts`, with the single slot {description} (an AU's plain description).
AU_INFERENCE_TEMPLATES: tuple[str, ...] = (
    "a face with {description}.",
    "a photo of a face with {description}.",
    "a 3D scan of a face with {description}.",
    "a rendered 3D face with {description}.",
    "facial action: {description}.",
    "{description}.",
)

# Colon forms read correctly whether the label is a noun ("happiness"), an adjective ("happy") or a phrase.
INFERENCE_TEMPLATES: tuple[str, ...] = (
    "a photo of a face, expression: {label}.",
    "a face, expression: {label}.",
    "facial expression: {label}.",
    "a 3D scan of a face, expression: {label}.",
    "a rendered 3D face, expression: {label}.",
    "a close-up of a face, emotion: {label}.",
    "emotion: {label}.",
    "{label}.",
)

# label -> aliases (other spellings of the label), adjectives, nouns, actions, graded (intensity applies).
LEXICON: dict[str, dict[str, Any]] = {
    "anger": {
        "aliases": ("angry", "an", "anger"),
        "adjectives": ("angry", "furious", "irritated", "annoyed", "enraged", "mad", "cross"),
        "nouns": ("anger", "rage", "fury", "irritation", "annoyance"),
        "actions": (
            "lowered, drawn-together eyebrows and pressed lips",
            "a furrowed brow and a tightened jaw",
            "glaring eyes and narrowed lips",
        ),
    },
    "disgust": {
        "aliases": ("disgusted", "di"),
        "adjectives": ("disgusted", "repulsed", "revolted", "grossed out", "sickened", "nauseated"),
        "nouns": ("disgust", "revulsion", "repulsion", "distaste"),
        "actions": (
            "a wrinkled nose and a raised upper lip",
            "a curled upper lip and narrowed eyes",
            "a wrinkled nose and lowered brows",
        ),
    },
    "fear": {
        "aliases": ("afraid", "fearful", "scared", "fe"),
        "adjectives": ("afraid", "fearful", "scared", "frightened", "terrified", "alarmed"),
        "nouns": ("fear", "terror", "fright", "alarm"),
        "actions": (
            "raised, drawn-together eyebrows and stretched lips",
            "wide eyes and lips pulled back",
            "tense raised brows and an open, stretched mouth",
        ),
    },
    "happiness": {
        "aliases": ("happy", "joy", "ha"),
        "adjectives": ("happy", "joyful", "cheerful", "smiling", "delighted", "glad", "pleased"),
        "nouns": ("happiness", "joy", "delight", "cheerfulness", "amusement"),
        "actions": (
            "a broad smile and raised cheeks",
            "smiling lips and crinkled eyes",
            "lip corners pulled up and wrinkles at the eyes",
        ),
    },
    "sadness": {
        "aliases": ("sad", "sa"),
        "adjectives": ("sad", "unhappy", "sorrowful", "gloomy", "downcast", "miserable", "dejected"),
        "nouns": ("sadness", "sorrow", "grief", "unhappiness", "gloom"),
        "actions": (
            "drooping lip corners and raised inner eyebrows",
            "a downturned mouth and heavy eyelids",
            "a trembling, downturned mouth and slanted eyebrows",
        ),
    },
    "surprise": {
        "aliases": ("surprised", "su"),
        "adjectives": ("surprised", "astonished", "amazed", "startled", "shocked", "astounded"),
        "nouns": ("surprise", "astonishment", "amazement", "shock"),
        "actions": (
            "raised eyebrows and an open mouth",
            "wide-open eyes and a dropped jaw",
            "lifted brows and widened eyes",
        ),
    },
    "neutral": {
        "aliases": ("ne", "neutral expression"),
        "adjectives": ("neutral", "expressionless", "blank", "calm", "relaxed", "impassive"),
        "nouns": ("no emotion", "a neutral expression", "calm", "composure"),
        "actions": (
            "relaxed facial muscles and a closed mouth",
            "a relaxed brow and lips at rest",
            "no visible muscle tension",
        ),
        # "a very neutral face" is not a thing: intensity is ignored for neutral.
        "graded": False,
    },
}

# Intensity 1-4 (BU-3DFE levels 01-04) as adverbs for {adj} and adjectives for {noun}.
INTENSITY_ADVERBS: dict[int, tuple[str, ...]] = {
    1: ("slightly", "mildly", "a little"),
    2: ("moderately", "somewhat", "fairly"),
    3: ("clearly", "quite", "markedly"),
    4: ("very", "extremely", "intensely"),
}
INTENSITY_ADJECTIVES: dict[int, tuple[str, ...]] = {
    1: ("slight", "mild", "faint"),
    2: ("moderate", "some", "noticeable"),
    3: ("clear", "strong", "marked"),
    4: ("intense", "extreme", "great"),
}

# Metadata value -> words. Keys are matched after `_norm_key` (lower case, "_"/"-" as spaces); the aliases
# cover the dataset codes (BU-3DFE: F/M, WH AE BL LA IN AM; notes/datasets.md).
GENDER_WORDS: dict[str, tuple[str, ...]] = {"female": ("woman", "female"), "male": ("man", "male")}
GENDER_ALIASES: dict[str, str] = {"f": "female", "woman": "female", "m": "male", "man": "male"}
AGE_WORDS: dict[str, tuple[str, ...]] = {
    "young": ("young",),
    "adult": ("adult",),
    "middle aged": ("middle-aged",),
    "elderly": ("elderly", "older"),
}
AGE_ALIASES: dict[str, str] = {
    "young adult": "young",
    "middle": "middle aged",
    "old": "elderly",
    "senior": "elderly",
}
# A numeric age falls in the first group whose upper bound (exclusive) exceeds it.
AGE_BOUNDS: tuple[tuple[float, str], ...] = (
    (30, "young"),
    (45, "adult"),
    (60, "middle aged"),
    (math.inf, "elderly"),
)
ETHNICITY_WORDS: dict[str, tuple[str, ...]] = {
    "white": ("White",),
    "black": ("Black",),
    "east asian": ("East Asian", "Asian"),
    "hispanic": ("Hispanic", "Latin American"),
    "indian": ("Indian", "South Asian"),
    "middle eastern": ("Middle Eastern",),
}
ETHNICITY_ALIASES: dict[str, str] = {
    "wh": "white",
    "caucasian": "white",
    "bl": "black",
    "african": "black",
    "ae": "east asian",
    "asian": "east asian",
    "la": "hispanic",
    "latino": "hispanic",
    "latina": "hispanic",
    "latino/hispanic": "hispanic",
    "hispanic latino": "hispanic",
    "in": "indian",
    "south asian": "indian",
    "am": "middle eastern",
    "middle east asian": "middle eastern",
}
PERSON_WORDS: tuple[str, ...] = ("person", "individual")  # the noun when the gender is unknown

DEFAULT_VIEW_NAMES: tuple[str, ...] = tuple(_VIEW_NAMES)
VIEW_PHRASES: dict[str, tuple[str, ...]] = {
    "frontal": ("seen from the front", "in a frontal view", "viewed head-on"),
    "left": ("seen from the left", "in a left view", "viewed from the left side"),
    "right": ("seen from the right", "in a right view", "viewed from the right side"),
}

_MISSING = {"", "none", "nan", "null", "unknown", "n/a", "na", "?", "-"}
_METADATA_KEYS = {
    "gender": ("gender", "sex"),
    "age": ("age", "age_group"),
    "ethnicity": ("ethnicity", "race"),
    "intensity": ("intensity",),
}
_METADATA_FIELDS = frozenset(k for keys in _METADATA_KEYS.values() for k in keys)
_EMOTION_SLOTS = frozenset({"adj", "noun", "action"})
_AU_KEY = "aus"  # the metadata key of a sample's AU weights: {AU number: weight in [0, 1]}
_TRAIN_SLOTS = _EMOTION_SLOTS | {"person"}
_LEXICON_FIELDS = {"aliases", "adjectives", "nouns", "actions", "graded"}
# Words whose leading vowel letter is not a vowel sound, and the reverse.
_A_BEFORE = re.compile(r"^(uni|use|usu|uti|eu|one|once)", re.IGNORECASE)
_AN_BEFORE = re.compile(r"^(hour|honest|honou?r|heir)", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PromptConfig:
    """How prompts are made. Every `extra_*` field adds to the built-in vocabulary of this module.

    seed: seed of the training sampler (`random.Random`); the inference bank uses no randomness.
    enabled: False gives the "without augmented prompts" ablation: every training prompt (per sample, per
        view, per class) is the first inference template filled with the label.
    use_metadata: put the sample's gender, age group, ethnicity and intensity in training prompts when known.
    metadata_dropout: probability in [0, 1] that a known metadata field is left out of one drawn prompt, so
        that training also sees prompts without it.
    use_view_phrases: append a view phrase ("..., seen from the left.") to training prompts of named views.
    view_names: the view order of `pixel_values` (B, V, ...): view i of a sample is named view_names[i].
    extra_templates: training templates ({person}, {adj}, {noun}, {action}; at least one of the last three).
    extra_inference_templates: inference templates, with the single slot {label}.
    extra_lexicon: label -> {"aliases", "adjectives", "nouns", "actions": list[str], "graded": bool}. An
        existing label gets the words appended (new synonyms); a new label becomes a lexicon entry and needs
        at least one adjective, noun or action.
    extra_genders, extra_age_groups, extra_ethnicities: metadata value -> words, e.g. {"nonbinary":
        ["person"]} (gender words are nouns, the others adjectives).
    extra_view_phrases: view name -> phrases, e.g. {"top": ["seen from above"]}.
    au_prompt_prob: probability in [0, 1] that a training prompt of a sample whose metadata has action-unit
        weights ("aus": {AU number: weight}) describes the face by its strongest active AUs (AU_TRAIN_TEMPLATES)
        instead of a TRAIN_TEMPLATES one. Metadata without "aus" draws exactly as it would with 0. Independent
        of use_metadata; labels outside the lexicon never get AU prompts.
    au_min_weight: an AU is active from this weight on (0.15: above the AU sampler's distractors, < 0.12).
    au_max_count: an AU prompt names the 1 to au_max_count strongest active AUs (how many is drawn).
    """

    seed: int = 0
    enabled: bool = True
    use_metadata: bool = True
    metadata_dropout: float = 0.0
    use_view_phrases: bool = False
    view_names: tuple[str, ...] = DEFAULT_VIEW_NAMES
    extra_templates: tuple[str, ...] = ()
    extra_inference_templates: tuple[str, ...] = ()
    extra_lexicon: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_genders: dict[str, list[str]] = field(default_factory=dict)
    extra_age_groups: dict[str, list[str]] = field(default_factory=dict)
    extra_ethnicities: dict[str, list[str]] = field(default_factory=dict)
    extra_view_phrases: dict[str, list[str]] = field(default_factory=dict)
    au_prompt_prob: float = 0.3
    au_min_weight: float = 0.15
    au_max_count: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int; got {self.seed!r}")
        for name in ("enabled", "use_metadata", "use_view_phrases"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool; got {getattr(self, name)!r}")
        for name in ("metadata_dropout", "au_prompt_prob"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
        if not isinstance(self.au_min_weight, int | float) or not 0.0 < self.au_min_weight <= 1.0:
            raise ValueError(f"au_min_weight must be in (0, 1]; got {self.au_min_weight!r}")
        _check_positive(self.au_max_count, "au_max_count")
        self.view_names = _str_tuple(self.view_names, "view_names")
        if not self.view_names or len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view_names must be non-empty and unique; got {self.view_names}")
        self.extra_templates = _str_tuple(self.extra_templates, "extra_templates")
        self.extra_inference_templates = _str_tuple(
            self.extra_inference_templates, "extra_inference_templates"
        )
        for template in self.extra_templates:
            _check_template(template, allowed=_TRAIN_SLOTS, required=_EMOTION_SLOTS, what="training template")
        for template in self.extra_inference_templates:
            _check_template(template, allowed={"label"}, required={"label"}, what="inference template")
        if not isinstance(self.extra_lexicon, Mapping):
            raise ValueError("extra_lexicon must be a mapping label -> entry")
        for label, entry in self.extra_lexicon.items():
            _check_entry(label, entry, new=_norm_key(label) not in _builtin_alias_map())
        for name in ("extra_genders", "extra_age_groups", "extra_ethnicities", "extra_view_phrases"):
            _check_word_map(getattr(self, name), name)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PromptConfig:
        """Build from a plain dict (e.g. a YAML/JSON config section); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown PromptConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that `from_dict` turns back into an equal config."""
        out = asdict(self)
        for key in ("view_names", "extra_templates", "extra_inference_templates"):
            out[key] = list(out[key])
        return out


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings; got {value!r}")
    value = tuple(value)
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name} must hold non-empty strings; got {value!r}")
    return value


def _template_slots(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:  # unbalanced braces
        raise ValueError(f"malformed template {template!r}: {err}") from None


def _check_template(template: str, allowed: set[str], required: set[str], what: str) -> None:
    slots = _template_slots(template)
    if not slots <= allowed:
        raise ValueError(
            f"{what} {template!r} uses unknown slot(s) {sorted(slots - allowed)}; allowed: {sorted(allowed)}"
        )
    if not slots & required:
        raise ValueError(f"{what} {template!r} names no emotion: it needs one of {sorted(required)}")


def _check_entry(label: Any, entry: Any, new: bool) -> None:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"lexicon labels must be non-empty strings; got {label!r}")
    if not isinstance(entry, Mapping):
        raise ValueError(f"lexicon entry for {label!r} must be a mapping; got {entry!r}")
    unknown = set(entry) - _LEXICON_FIELDS
    if unknown:
        raise ValueError(
            f"lexicon entry for {label!r} has unknown field(s) {sorted(unknown)}; known: {sorted(_LEXICON_FIELDS)}"
        )
    for key in _LEXICON_FIELDS - {"graded"}:
        if key in entry:
            _str_tuple(entry[key], f"extra_lexicon[{label!r}][{key!r}]")
    if "graded" in entry and not isinstance(entry["graded"], bool):
        raise ValueError(f"extra_lexicon[{label!r}]['graded'] must be a bool")
    if new and not any(entry.get(key) for key in ("adjectives", "nouns", "actions")):
        raise ValueError(f"new label {label!r} needs at least one of adjectives, nouns or actions")


def _check_word_map(value: Any, name: str) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping value -> list of words; got {value!r}")
    for key, words in value.items():
        if not isinstance(key, str | int) or not str(key).strip():
            raise ValueError(f"{name} keys must be non-empty strings; got {key!r}")
        if not _str_tuple(words, f"{name}[{key!r}]"):
            raise ValueError(f"{name}[{key!r}] needs at least one word")


# ----------------------------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------------------------


def _norm_key(value: Any) -> str:
    """Lookup key of a label or metadata value: lower case, '_' and '-' as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]", " ", str(value)).lower().split())


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING


def _article(match: re.Match) -> str:
    article, word = match.group(1), match.group(2)
    vowel = (word[0].lower() in "aeiou" and not _A_BEFORE.match(word)) or bool(_AN_BEFORE.match(word))
    new = "an" if vowel else "a"
    return (new.capitalize() if article[0].isupper() else new) + " " + word


@functools.lru_cache(maxsize=1 << 16)
def _clean(text: str) -> str:
    """One space between words, none before punctuation, and 'a'/'an' matching the next word (memoised: a
    training step cleans a thousand prompts, drawn from a finite set of fillings)."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return re.sub(r"\b([Aa]n?) ([A-Za-z][\w-]*)", _article, text)


def _with_view(text: str, phrase: str | None) -> str:
    """'a sad face.' + 'seen from the left' -> 'a sad face, seen from the left.'"""
    if not phrase:
        return text
    body = text.rstrip()
    end = body[-1] if body and body[-1] in ".!?" else ""
    return f"{body[: len(body) - len(end)]}, {phrase}{end or '.'}"


# ----------------------------------------------------------------------------------------------------------
# Action units
# ----------------------------------------------------------------------------------------------------------


def _au_number(key: Any) -> int:
    """An AU key (4, "4", "AU4") -> 4; ValueError when it is not in affectvlm.data.aus.AU_CATALOGUE."""
    number = None
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):  # numpy integers too
        number = int(key)
    elif isinstance(key, str) and (m := re.fullmatch(r"\s*(?:AU)?\s*(\d+)\s*", key, re.IGNORECASE)):
        number = int(m.group(1))
    if number not in AU_CATALOGUE:
        raise ValueError(f"unknown action unit {key!r}: known {sorted(AU_CATALOGUE)} (as 4, '4' or 'AU4')")
    return number


def _strongest_aus(aus: Any, min_weight: float, max_count: int) -> tuple[int, ...]:
    """The sample's metadata "aus" ({AU: weight in [0, 1]}) -> up to max_count AU numbers of weight >=
    min_weight, strongest first (ties: lower AU number first); () when unknown (None, NaN, "unknown")."""
    if _is_missing(aus):
        return ()
    if not isinstance(aus, Mapping):
        raise ValueError(f"metadata 'aus' must be a mapping AU number -> weight in [0, 1]; got {aus!r}")
    weights: dict[int, float] = {}
    for key, weight in aus.items():
        number = _au_number(key)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"the weight of AU{number} in metadata 'aus' must be in [0, 1]; got {weight!r}")
        if number in weights:
            raise ValueError(f"AU{number} appears twice in metadata 'aus': {aus!r}")
        weights[number] = float(weight)
    ranked = sorted((au for au, w in weights.items() if w >= min_weight), key=lambda au: (-weights[au], au))
    return tuple(ranked[:max_count])


@functools.lru_cache(maxsize=4096)
def _au_phrases(numbers: tuple[int, ...]) -> tuple[str, ...]:
    """(4, 7) -> ("brows lowered and drawn together", "brows lowered and drawn together and eyelids
    tightened, eyes narrowed"): the descriptions of the first 1, 2, ... AUs, joined."""
    words = [au_description(au) for au in numbers]
    return tuple(
        words[0] if k == 1 else f"{', '.join(words[: k - 1])} and {words[k - 1]}"
        for k in range(1, len(words) + 1)
    )


# ----------------------------------------------------------------------------------------------------------
# The bank
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Emotion:
    label: str
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    actions: tuple[str, ...]
    graded: bool


def _builtin_alias_map() -> dict[str, str]:
    alias = {_norm_key(label): label for label in LEXICON}
    for label, entry in LEXICON.items():
        alias.update({_norm_key(a): label for a in entry.get("aliases", ())})
    return alias


def _merge_words(
    base: dict[str, tuple[str, ...]], extra: Mapping[Any, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    out = {_norm_key(k): tuple(v) for k, v in base.items()}
    for key, words in extra.items():
        key = _norm_key(key)
        out[key] = tuple(dict.fromkeys((*out.get(key, ()), *words)))  # ordered, de-duplicated
    return out


class PromptBank:
    """Seeded prompt sampler for training, and the inference prompt bank.

    Training: `sample` gives each view of each sample its own prompt; `class_prompts` (and
    `class_prompts_per_view`) give P prompt variants per class for the class text embeddings of a step.
    Inference: `inference_prompts` (deterministic, no metadata, see the module docstring).
    Labels are matched to the lexicon case-insensitively, also by alias ("happy", "HA" -> happiness); a label
    outside the lexicon is used verbatim in the inference templates, for training too.
    The sampler state is in `state_dict()` so that a resumed run draws the same prompts.
    """

    def __init__(self, config: PromptConfig | None = None) -> None:
        self.config = config if config is not None else PromptConfig()
        cfg = self.config
        self._rng = random.Random(cfg.seed)
        self._templates = tuple(
            (t, frozenset(_template_slots(t))) for t in (*TRAIN_TEMPLATES, *cfg.extra_templates)
        )
        self._au_templates = tuple((t, frozenset(_template_slots(t))) for t in AU_TRAIN_TEMPLATES)
        self._inference_templates = (*INFERENCE_TEMPLATES, *cfg.extra_inference_templates)

        self._alias = _builtin_alias_map()
        raw = {label: dict(entry) for label, entry in LEXICON.items()}
        for label, entry in cfg.extra_lexicon.items():
            target = self._alias.get(_norm_key(label), label.strip())
            merged = raw.setdefault(target, {})
            for key in ("aliases", "adjectives", "nouns", "actions"):
                merged[key] = tuple(dict.fromkeys((*merged.get(key, ()), *entry.get(key, ()))))
            if "graded" in entry:
                merged["graded"] = entry["graded"]
            self._alias[_norm_key(target)] = target
            self._alias.update({_norm_key(a): target for a in merged["aliases"]})
        self._emotions = {
            label: _Emotion(
                label,
                tuple(e.get("adjectives", ())),
                tuple(e.get("nouns", ())),
                tuple(e.get("actions", ())),
                bool(e.get("graded", True)),
            )
            for label, e in raw.items()
        }

        self._genders = _merge_words(GENDER_WORDS, cfg.extra_genders)
        self._gender_alias = {**GENDER_ALIASES, **{_norm_key(k): _norm_key(k) for k in cfg.extra_genders}}
        self._ages = _merge_words(AGE_WORDS, cfg.extra_age_groups)
        self._age_alias = {**AGE_ALIASES, **{_norm_key(k): _norm_key(k) for k in cfg.extra_age_groups}}
        self._ethnicities = _merge_words(ETHNICITY_WORDS, cfg.extra_ethnicities)
        self._ethnicity_alias = {
            **ETHNICITY_ALIASES,
            **{_norm_key(k): _norm_key(k) for k in cfg.extra_ethnicities},
        }
        self._view_phrases = _merge_words(VIEW_PHRASES, cfg.extra_view_phrases)
        self._pool_cache: dict[str, tuple[str, ...]] = {}
        # Memos of pure lookups (nothing random: the draws and their order are unchanged). A paper-setting step
        # draws B x V x C prompts (64 x 3 x 6 = 1,152), each of which needs these.
        self._label_memo: dict[str, str | None] = {}
        self._meta_memo: dict[tuple, dict[str, Any]] = {}
        self._slot_memo: dict[tuple, dict[str, list[str]]] = {}
        self._compatible_memo: dict[tuple[str, bool], list[tuple[str, frozenset]]] = {}
        self._view_memo: dict[str | None, tuple[str | None, ...]] = {}

    # -- lookups -------------------------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels of the lexicon (built-in and added), canonical spelling."""
        return tuple(self._emotions)

    def canonical_label(self, label: str) -> str | None:
        """The lexicon label that `label` spells (case, '_'/'-' and aliases ignored), or None."""
        if isinstance(label, str) and label in self._label_memo:
            return self._label_memo[label]
        found = self._alias.get(_norm_key(_check_label(label)))
        self._label_memo[label] = found
        return found

    @staticmethod
    def _lookup(value: Any, words: dict, alias: dict, what: str, config_field: str) -> tuple[str, ...] | None:
        """Words for a metadata value; None when unknown; ValueError when not in the vocabulary."""
        if _is_missing(value):
            return None
        key = _norm_key(value)
        key = alias.get(key, key)
        if key not in words:
            raise ValueError(
                f"unknown {what} {value!r}: known {sorted(words)}; add it with PromptConfig.{config_field}"
            )
        return words[key]

    def _resolve_metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """Metadata -> {"gender"/"age"/"ethnicity": word tuple, "intensity": 1-4}, known fields only.
        The result is shared by equal metadata: read it, never change it."""
        if metadata is None or not self.config.use_metadata:
            return {}
        if not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be a mapping (or None); got {metadata!r}")
        try:
            # The value's type too: True == 1 as a key, but True is no intensity and must still raise.
            key = tuple(
                sorted((k, type(v).__name__, v) for k, v in metadata.items() if k in _METADATA_FIELDS)
            )
            hash(key)
        except TypeError:  # an unhashable value: resolve it every time
            return self._resolve_metadata_uncached(metadata)
        if key not in self._meta_memo:
            if len(self._meta_memo) > 4096:  # bounded: NaN values never compare equal, so never hit
                self._meta_memo.clear()
            self._meta_memo[key] = self._resolve_metadata_uncached(metadata)
        return self._meta_memo[key]

    def _resolve_metadata_uncached(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        raw = {}
        for name, keys in _METADATA_KEYS.items():
            values = [metadata[k] for k in keys if k in metadata and not _is_missing(metadata[k])]
            raw[name] = values[0] if values else None
        out: dict[str, Any] = {}
        gender = self._lookup(raw["gender"], self._genders, self._gender_alias, "gender", "extra_genders")
        if gender:
            out["gender"] = gender
        age = raw["age"]
        if isinstance(age, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", age):
            age = float(age)
        elif isinstance(age, str) and (span := re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", age)):
            # Datasets write age groups as year ranges ("30-39"): the midpoint picks the group.
            age = (int(span.group(1)) + int(span.group(2))) / 2
        if isinstance(age, int | float) and not isinstance(age, bool) and not _is_missing(age):
            if not 0 <= age <= 130:
                raise ValueError(f"age must be in [0, 130] years; got {age}")
            age = next(group for bound, group in AGE_BOUNDS if age < bound)
        age_words = self._lookup(age, self._ages, self._age_alias, "age group", "extra_age_groups")
        if age_words:
            out["age"] = age_words
        ethnicity = self._lookup(
            raw["ethnicity"], self._ethnicities, self._ethnicity_alias, "ethnicity", "extra_ethnicities"
        )
        if ethnicity:
            out["ethnicity"] = ethnicity
        intensity = raw["intensity"]
        if intensity is not None:
            try:
                level = int(str(intensity).strip())
            except ValueError:
                raise ValueError(
                    f"intensity must be an integer 1-4 (0 or None: unknown); got {intensity!r}"
                ) from None
            if level not in INTENSITY_ADVERBS and level != 0:
                raise ValueError(f"intensity must be an integer 1-4 (0 or None: unknown); got {intensity!r}")
            if level:
                out["intensity"] = level
        return out

    def _slot_options(self, emotion: _Emotion, meta: Mapping[str, Any]) -> dict[str, list[str]]:
        """Every filling of every slot for this emotion and resolved metadata (memoised; read only)."""
        key = (emotion.label, tuple(sorted(meta.items())))
        if key not in self._slot_memo:
            self._slot_memo[key] = self._slot_options_uncached(emotion, meta)
        return self._slot_memo[key]

    def _slot_options_uncached(self, emotion: _Emotion, meta: Mapping[str, Any]) -> dict[str, list[str]]:
        level = meta.get("intensity") if emotion.graded else None
        advs = INTENSITY_ADVERBS[level] if level else ("",)
        adjs = INTENSITY_ADJECTIVES[level] if level else ("",)
        nouns_g = meta.get("gender", PERSON_WORDS)
        person = [
            f"a {age} {eth} {noun}"
            for age in meta.get("age", ("",))
            for eth in meta.get("ethnicity", ("",))
            for noun in nouns_g
        ]
        return {
            "person": person,
            "adj": [f"{a} {w}" for a in advs for w in emotion.adjectives],
            "noun": [f"{a} {w}" for a in adjs for w in emotion.nouns],
            "action": list(emotion.actions),
        }

    def _compatible(self, emotion: _Emotion, au: bool = False) -> list[tuple[str, frozenset]]:
        """The training templates (AU_TRAIN_TEMPLATES with `au`) whose slots this emotion can fill."""
        key = (emotion.label, au)
        if key not in self._compatible_memo:
            self._compatible_memo[key] = self._compatible_uncached(emotion, au)
        return self._compatible_memo[key]

    def _compatible_uncached(self, emotion: _Emotion, au: bool = False) -> list[tuple[str, frozenset]]:
        have = {
            "person",
            "aus",
            *(
                s
                for s, w in (
                    ("adj", emotion.adjectives),
                    ("noun", emotion.nouns),
                    ("action", emotion.actions),
                )
                if w
            ),
        }
        return [(t, slots) for t, slots in (self._au_templates if au else self._templates) if slots <= have]

    def _au_options(self, metadata: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The {aus} fillings for a sample's metadata: its 1, 2, ... strongest active AUs described; () when
        AU prompts are off, the metadata has no "aus" or no AU in it is active."""
        cfg = self.config
        if not cfg.enabled or cfg.au_prompt_prob <= 0 or not isinstance(metadata, Mapping):
            return ()
        numbers = _strongest_aus(metadata.get(_AU_KEY), cfg.au_min_weight, cfg.au_max_count)
        return _au_phrases(numbers) if numbers else ()

    def _view_phrases_for(self, view: str | None) -> tuple[str | None, ...]:
        if view is None or not self.config.use_view_phrases:
            return (None,)
        if view not in self._view_memo:
            self._view_memo[view] = self._view_phrases.get(_norm_key(view), (None,))
        return self._view_memo[view]

    # -- training ------------------------------------------------------------------------------------------

    def _draw(
        self, label: str, meta: Mapping[str, Any], view: str | None, au_options: Sequence[str] = ()
    ) -> str:
        rng = self._rng
        emotion = self._emotions.get(self.canonical_label(label) or "")
        if not self.config.enabled:
            return self._fill_inference(self._inference_templates[0], label)
        phrase = rng.choice(self._view_phrases_for(view))
        templates = self._compatible(emotion) if emotion is not None else []
        if not templates:  # a label outside the lexicon: its own words in the inference templates
            return _clean(
                _with_view(self._fill_inference(rng.choice(self._inference_templates), label), phrase)
            )
        if self.config.metadata_dropout > 0:
            meta = {k: v for k, v in meta.items() if rng.random() >= self.config.metadata_dropout}
        # Without AU options nothing more is drawn: the draws are exactly those of a sample without "aus".
        au_templates = self._compatible(emotion, au=True) if au_options else ()
        if au_templates and rng.random() < self.config.au_prompt_prob:
            templates = au_templates
        template, slots = rng.choice(templates)
        options = self._slot_options(emotion, meta)
        text = template.format(
            **{slot: rng.choice(au_options if slot == "aus" else options[slot]) for slot in sorted(slots)}
        )
        return _clean(_with_view(text, phrase))

    def sample(
        self,
        labels: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        num_views: int = 1,
    ) -> list[list[str]]:
        """One training prompt per sample and view, drawn independently: (B,) labels -> (B, V) prompts.

        metadata: per sample a mapping with any of "gender" (or "sex"), "age" (years or a group name; or
            "age_group"), "ethnicity" (or "race"), "intensity" (1-4; 0 = none) and "aus" (action-unit weights
            {4: 0.8, 7: 0.5}, keys 4, "4" or "AU4": see `PromptConfig.au_prompt_prob`); other keys are ignored,
            unknown values (None, NaN, "", "unknown") are left out; an unrecognised value raises ValueError.
        num_views: V; view v is named `config.view_names[v]` for the optional view phrase.
        """
        labels = list(labels)
        if metadata is None:
            metadata = [None] * len(labels)
        if len(metadata) != len(labels):
            raise ValueError(f"got {len(labels)} labels but {len(metadata)} metadata entries")
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int; got {num_views!r}")
        views = [
            self.config.view_names[v] if v < len(self.config.view_names) else None for v in range(num_views)
        ]
        out = []
        for label, meta in zip(labels, metadata):
            resolved, au_options = self._resolve_metadata(meta), self._au_options(meta)
            out.append([self._draw(label, resolved, view, au_options) for view in views])
        return out

    def _pool(self, label: str) -> tuple[str, ...]:
        """All metadata-free training prompts of a label, sorted (so that sampling is reproducible)."""
        if label not in self._pool_cache:
            self._pool_cache[label] = tuple(self.all_prompts(label))
        return self._pool_cache[label]

    def _draw_class(self, label: str, num_prompts: int, view: str | None) -> list[str]:
        if not self.config.enabled:
            return [self._fill_inference(self._inference_templates[0], label)] * num_prompts
        pool = self._pool(label)
        # Without replacement while the pool allows it, so that P variants are P different prompts.
        chosen = (
            self._rng.sample(pool, num_prompts)
            if num_prompts <= len(pool)
            else self._rng.choices(pool, k=num_prompts)
        )
        phrases = self._view_phrases_for(view)
        return [_clean(_with_view(p, self._rng.choice(phrases))) for p in chosen]

    def class_prompts(self, labels: Sequence[str], num_prompts: int = 8) -> dict[str, list[str]]:
        """P metadata-free training prompts per class: {label: P prompts}, in the order of `labels`.

        Tokenised, the values stack to input_ids of shape (C, P, L) for the model's class text embeddings.
        """
        _check_positive(num_prompts, "num_prompts")
        return {label: self._draw_class(label, num_prompts, None) for label in _check_labels(labels)}

    def class_prompts_per_view(
        self, labels: Sequence[str], num_prompts: int = 8, num_views: int | None = None
    ) -> list[dict[str, list[str]]]:
        """Like `class_prompts`, drawn independently for each view: V dicts -> input_ids (V, C, P, L)."""
        _check_positive(num_prompts, "num_prompts")
        num_views = len(self.config.view_names) if num_views is None else num_views
        _check_positive(num_views, "num_views")
        labels = _check_labels(labels)
        views = [
            self.config.view_names[v] if v < len(self.config.view_names) else None for v in range(num_views)
        ]
        return [{label: self._draw_class(label, num_prompts, view) for label in labels} for view in views]

    def all_prompts(
        self, label: str, metadata: Mapping[str, Any] | None = None, view: str | None = None
    ) -> list[str]:
        """Every distinct training prompt `sample` can draw for this label, metadata and view (sorted); with
        "aus" in the metadata, its action-unit prompts too."""
        emotion = self._emotions.get(self.canonical_label(label) or "")
        meta = self._resolve_metadata(metadata)
        phrases = self._view_phrases_for(view)
        templates = self._compatible(emotion) if emotion is not None else []
        au_options = self._au_options(metadata)
        out: set[str] = set()
        if not templates:
            out.update(_with_view(p, ph) for p in self.inference_prompts([label])[label] for ph in phrases)
        else:
            au_templates = self._compatible(emotion, au=True) if au_options else []
            if au_templates and self.config.au_prompt_prob >= 1:
                templates = []  # every prompt is an AU prompt
            options = {**self._slot_options(emotion, meta), "aus": list(au_options)}
            for template, slots in (*templates, *au_templates):
                names = sorted(slots)
                for values in itertools.product(*(options[n] for n in names)):
                    text = template.format(**dict(zip(names, values)))
                    out.update(_with_view(text, ph) for ph in phrases)
        return sorted({_clean(t) for t in out})

    def num_prompts(
        self, label: str, metadata: Mapping[str, Any] | None = None, view: str | None = None
    ) -> int:
        """How many distinct training prompts this label has for this metadata and view."""
        return len(self.all_prompts(label, metadata, view))

    # -- inference -----------------------------------------------------------------------------------------

    def _fill_inference(self, template: str, label: str) -> str:
        return _clean(template.format(label=" ".join(_check_label(label).split())))

    def inference_prompts(self, labels: Sequence[str]) -> dict[str, list[str]]:
        """{label: prompts} from the inference templates and the label's own words only.

        No metadata, lexicon synonyms, facial-action descriptions or randomness enter, so a label's prompts do
        not depend on the seed, on what was sampled before, on the other labels or on any sample: nothing
        about a test sample can leak into its class embeddings. Every label has the same number of prompts.
        """
        return {
            label: [self._fill_inference(t, label) for t in self._inference_templates]
            for label in _check_labels(labels)
        }

    # -- checkpointing -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The sampler state (for `accelerator.register_for_checkpointing` or a checkpoint dict)."""
        return {"rng": self._rng.getstate(), "config": self.config.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rng = state["rng"]
        # getstate() is (version, tuple, gauss); a round trip through JSON/YAML turns the tuples into lists.
        self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))


def _check_label(label: Any) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"labels must be non-empty strings; got {label!r}")
    return label


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of strings, not the string {labels!r}")
    return [_check_label(label) for label in labels]


def _check_positive(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def inference_prompts(labels: Sequence[str], config: PromptConfig | None = None) -> dict[str, list[str]]:
    """{label: prompts} for evaluation and zero-shot scoring; see `PromptBank.inference_prompts`."""
    return PromptBank(config).inference_prompts(labels)


def au_label(au: int) -> str:
    """The display label of an action unit: 4 -> "AU4 brow lowerer" (FACS name from the catalogue)."""
    number = _au_number(au)
    return f"AU{number} {AU_CATALOGUE[number].name}"


def au_prompts(aus: Iterable[int | str] | None = None) -> dict[str, list[str]]:
    """{"AU4 brow lowerer": ["a face with brows lowered and drawn together.", ...]} for scoring a scan
    against action-unit descriptions: every AU of affectvlm.data.aus.AU_CATALOGUE in AU order, or the given
    ones (4, "4" or "AU4") in the given order. AU_INFERENCE_TEMPLATES filled with the AU's plain description
    only: deterministic, no metadata and no emotion word, every AU with the same number of prompts."""
    if isinstance(aus, str):
        raise ValueError(f"aus must be a list of action units, not the string {aus!r}")
    numbers = sorted(AU_CATALOGUE) if aus is None else list(dict.fromkeys(_au_number(au) for au in aus))
    return {
        au_label(au): [_clean(t.format(description=au_description(au))) for t in AU_INFERENCE_TEMPLATES]
        for au in numbers
    }


__all__ = [
    "AU_INFERENCE_TEMPLATES",
    "AU_TRAIN_TEMPLATES",
    "INFERENCE_TEMPLATES",
    "LEXICON",
    "TRAIN_TEMPLATES",
    "PromptBank",
    "PromptConfig",
    "au_label",
    "au_prompts",
    "inference_prompts",
]
