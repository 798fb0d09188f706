import ast
import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest

from affectvlm import vocabulary
from affectvlm.data.aus import AU_CATALOGUE, au_description
from affectvlm.prompts import (
    AGE_ALIASES,
    AGE_WORDS,
    AU_INFERENCE_TEMPLATES,
    ETHNICITY_ALIASES,
    ETHNICITY_WORDS,
    GENDER_ALIASES,
    GENDER_WORDS,
    INFERENCE_TEMPLATES,
    LEXICON,
    PromptBank,
    PromptConfig,
    au_prompts,
    inference_prompts,
)
from affectvlm.vocabulary import HELD_OUT_VOCABULARY, VALIDATION_VOCABULARY, find_held_out

EMOTIONS = list(LEXICON)
FULL = {"gender": "F", "age": 34, "ethnicity": "AE", "intensity": 4}
METADATA = [
    None,
    {},
    FULL,
    {"gender": "male", "age": "elderly", "ethnicity": "BL", "intensity": 1},
    {"gender": None, "age": float("nan"), "ethnicity": "", "intensity": 0},
    {"sex": "m", "age_group": "middle-aged", "race": "latino", "intensity": "02", "subject": "M0007"},
    {"ethnicity": "WH"},
]
# A prompt is clean when it has no placeholder residue, spacing or article mistakes.
BAD = re.compile(r"None|nan\b|\{|\}|  |\s[,.]|^\s|\s$|\ba [aeiou]|\ban [^aeiouAEIOU]|,,|\.\.")


def _bad(prompts):
    return [p for p in prompts if BAD.search(p)]


def test_many_distinct_clean_prompts_per_emotion():
    bank = PromptBank()
    for label in EMOTIONS:
        bare = bank.all_prompts(label)
        full = bank.all_prompts(label, FULL)
        assert len(bare) >= 150 and len(full) >= 250, label
        assert len(set(bare)) == len(bare)
        assert not _bad(bare) and not _bad(full), _bad(bare + full)[:5]


def test_unknown_metadata_is_left_out_cleanly():
    bank = PromptBank()
    unknown = {"gender": None, "age": float("nan"), "ethnicity": "unknown", "intensity": 0}
    assert bank.all_prompts("anger", unknown) == bank.all_prompts("anger") == bank.all_prompts("anger", {})
    for meta in METADATA:
        for label in EMOTIONS:
            prompts = bank.all_prompts(label, meta)
            assert not _bad(prompts), _bad(prompts)[:5]
    # Partly known metadata: only the known words appear.
    prompts = bank.all_prompts("sadness", {"ethnicity": "WH"})
    assert all("woman" not in p and " man" not in p for p in prompts)
    assert any("White person" in p for p in prompts)


def test_metadata_words_appear_when_known():
    bank = PromptBank()
    text = " ".join(bank.all_prompts("happiness", FULL))
    for word in ("woman", "adult", "East Asian", "very", "intense"):
        assert word in text
    text = " ".join(bank.all_prompts("anger", METADATA[5]))
    for word in ("man", "middle-aged", "Hispanic", "moderately"):
        assert word in text
    assert "person" not in text.replace("a person", "")
    # Intensity does not grade neutral ("a very neutral face").
    neutral = bank.all_prompts("neutral", FULL)
    assert not any(re.search(r"\b(very|extremely|intense|extreme)\b", p) for p in neutral)
    # use_metadata=False ignores it.
    assert PromptBank(PromptConfig(use_metadata=False)).all_prompts("fear", FULL) == bank.all_prompts("fear")


def test_bad_metadata_raises():
    bank = PromptBank()
    for meta in (
        {"gender": "xyz"},
        {"intensity": 7},
        {"intensity": "high"},
        {"age": -3},
        {"ethnicity": "martian"},
    ):
        with pytest.raises(ValueError):
            bank.sample(["anger"], [meta])
    with pytest.raises(ValueError):
        bank.sample(["anger", "fear"], [None])
    # ...and a config can teach it the value.
    bank = PromptBank(
        PromptConfig(extra_ethnicities={"martian": ["Martian"]}, extra_genders={"nb": ["person"]})
    )
    assert "a Martian person" in " ".join(bank.all_prompts("anger", {"ethnicity": "martian", "gender": "nb"}))


def test_sample_is_seeded_and_differs_per_view():
    labels = EMOTIONS * 4
    meta = [METADATA[i % len(METADATA)] for i in range(len(labels))]
    a = PromptBank(PromptConfig(seed=1)).sample(labels, meta, num_views=3)
    b = PromptBank(PromptConfig(seed=1)).sample(labels, meta, num_views=3)
    c = PromptBank(PromptConfig(seed=2)).sample(labels, meta, num_views=3)
    assert a == b and a != c
    assert len(a) == len(labels) and all(len(row) == 3 for row in a)
    assert sum(len(set(row)) == 3 for row in a) >= 0.8 * len(a)
    bank = PromptBank()
    for label, meta_i, row in zip(labels, meta, a):
        assert not _bad(row)
        pool = set(bank.all_prompts(label, meta_i))
        assert set(row) <= pool  # sample draws exactly from the enumerated prompts
    # Consecutive batches differ; labels match by alias.
    bank = PromptBank()
    assert bank.sample(["anger"] * 8) != bank.sample(["anger"] * 8)
    assert bank.canonical_label("Happy") == bank.canonical_label("HA") == "happiness"


def test_view_phrases_are_optional():
    rows = PromptBank().sample(["surprise"] * 20, num_views=3)
    assert not any("seen from" in p or "view" in p for row in rows for p in row)
    rows = PromptBank(PromptConfig(use_view_phrases=True)).sample(["surprise"] * 20, num_views=3)
    for row in rows:
        assert re.search(r"front|head-on", row[0]) and "left" in row[1] and "right" in row[2]
        assert not _bad(row) and all(p.endswith(".") for p in row)


def test_class_prompts():
    bank = PromptBank(PromptConfig(seed=5))
    prompts = bank.class_prompts(["anger", "happiness", "contempt"], num_prompts=8)
    assert list(prompts) == ["anger", "happiness", "contempt"]
    assert all(len(v) == 8 for v in prompts.values())  # stack to (C, P, L) once tokenised
    assert len(set(prompts["anger"])) == 8
    assert set(prompts["anger"]) <= set(bank.all_prompts("anger"))
    assert all("contempt" in p for p in prompts["contempt"])
    assert PromptBank(PromptConfig(seed=5)).class_prompts(["anger", "happiness", "contempt"], 8) == prompts
    assert bank.class_prompts(["anger"], 8) != bank.class_prompts(["anger"], 8)
    per_view = PromptBank(PromptConfig(use_view_phrases=True)).class_prompts_per_view(["fear", "sadness"], 4)
    assert len(per_view) == 3 and all(len(v) == 4 for d in per_view for v in d.values())
    assert all("left" in p for p in per_view[1]["fear"])


def test_inference_prompts_have_no_leakage():
    labels = ["happiness", "anger", "contempt", "a person who just won the lottery"]
    reference = inference_prompts(labels)
    for label, prompts in reference.items():
        assert len(prompts) == len(INFERENCE_TEMPLATES) and len(set(prompts)) == len(prompts)
        assert all(label in p for p in prompts) and not _bad(prompts)
    # The label's own words only: no synonym, facial action, metadata or intensity word.
    text = " ".join(reference["happiness"] + reference["anger"])
    for word in ("joy", "smile", "furious", "brow", "woman", " man", "very", "person", "young"):
        assert word not in text
    # Identical whatever the seed, the sampling history, the samples seen and the other labels.
    bank = PromptBank(PromptConfig(seed=123, use_view_phrases=True, metadata_dropout=0.5))
    bank.sample(["anger", "happiness"], [FULL, METADATA[3]], num_views=3)
    bank.class_prompts(["happiness"], 8)
    assert bank.inference_prompts(labels) == reference
    assert inference_prompts(labels[::-1]) == reference
    assert inference_prompts(["contempt"])["contempt"] == reference["contempt"]
    assert inference_prompts(
        ["happiness"], PromptConfig(extra_lexicon={"happiness": {"adjectives": ["elated"]}})
    ) == {"happiness": reference["happiness"]}
    with pytest.raises(ValueError):
        inference_prompts(["anger", ""])
    with pytest.raises(ValueError):
        inference_prompts("anger")


def test_config_adds_templates_synonyms_and_labels():
    cfg = PromptConfig(
        seed=7,
        extra_templates=["a mesh of {person} whose face shows {noun}."],
        extra_inference_templates=["a textured scan, emotion: {label}."],
        extra_lexicon={
            "happiness": {"adjectives": ["elated"]},
            "contempt": {
                "aliases": ["smirk"],
                "adjectives": ["contemptuous", "scornful"],
                "nouns": ["contempt"],
                "actions": ["one lip corner raised in a smirk"],
            },
        },
    )
    assert PromptConfig.from_dict(cfg.to_dict()) == cfg
    bank = PromptBank(cfg)
    assert "contempt" in bank.labels and bank.canonical_label("Smirk") == "contempt"
    happy = bank.all_prompts("happiness")
    assert any("elated" in p for p in happy) and any(p.startswith("a mesh of") for p in happy)
    assert any("smirk" in p for p in bank.all_prompts("contempt"))
    assert bank.num_prompts("contempt", FULL) > 100
    assert "a textured scan, emotion: contempt." in bank.inference_prompts(["contempt"])["contempt"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_templates": ["a face with {mood}."]},
        {"extra_templates": ["a photo of {person}."]},  # names no emotion
        {"extra_templates": ["a {adj face."]},
        {"extra_inference_templates": ["a face."]},
        {"extra_inference_templates": ["{label} {adj}"]},
        {"extra_lexicon": {"pride": {}}},
        {"extra_lexicon": {"pride": {"adjectives": "proud"}}},
        {"extra_lexicon": {"pride": {"adjective": ["proud"]}}},
        {"metadata_dropout": 1.5},
        {"view_names": []},
        {"seed": "zero"},
        {"extra_genders": {"nb": []}},
    ],
)
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        PromptConfig(**kwargs)


def test_config_from_dict_unknown_key_and_state_dict_resume():
    with pytest.raises(ValueError, match="unknown"):
        PromptConfig.from_dict({"templates": []})
    bank = PromptBank(PromptConfig(seed=3))
    bank.sample(["fear"] * 4, num_views=3)
    state = bank.state_dict()
    expected = bank.sample(["fear"] * 4, num_views=3)
    resumed = PromptBank(PromptConfig(seed=3))
    resumed.load_state_dict(state)
    assert resumed.sample(["fear"] * 4, num_views=3) == expected


def test_disabled_gives_one_fixed_prompt():
    bank = PromptBank(PromptConfig(enabled=False))
    rows = bank.sample(["anger", "fear"], [FULL, FULL], num_views=3)
    assert rows == [
        ["a photo of a face, expression: anger."] * 3,
        ["a photo of a face, expression: fear."] * 3,
    ]
    assert bank.class_prompts(["anger"], 2) == {"anger": ["a photo of a face, expression: anger."] * 2}


def test_metadata_dropout_mixes_prompts_with_and_without_metadata():
    bank = PromptBank(PromptConfig(metadata_dropout=0.5, seed=0))
    rows = bank.sample(["anger"] * 60, [FULL] * 60)
    prompts = [row[0] for row in rows]
    with_woman = sum("woman" in p or "female" in p for p in prompts)
    person = sum(re.search(r"\b(person|individual)\b", p) is not None for p in prompts)
    assert with_woman > 0 and person > 0


def test_age_year_ranges_pick_the_group_of_their_midpoint():
    bank = PromptBank(PromptConfig(seed=0))
    ranged = bank.all_prompts("happiness", {"age_group": "50-70"})
    assert ranged == bank.all_prompts("happiness", {"age": 60})
    assert any("elderly" in p or "older" in p for p in ranged)


def test_memoised_lookups_draw_exactly_the_prompts_of_uncached_ones():
    """The bank memoises its pure lookups (metadata resolution, slot fillings, templates) for speed; the
    random draws, and so every prompt, must be those of the plain computation."""

    class Uncached(PromptBank):
        _slot_options = PromptBank._slot_options_uncached
        _compatible = PromptBank._compatible_uncached

        def _resolve_metadata(self, metadata):
            if metadata is None or not self.config.use_metadata:
                return {}
            return self._resolve_metadata_uncached(metadata)

    config = PromptConfig(seed=5, metadata_dropout=0.3, view_names=("frontal", "left", "right"))
    labels = ["happiness", "Anger", "fear", "a made-up label", "sadness", "surprise"] * 3
    metadata = [
        {"gender": "female", "age": 25, "ethnicity": "WH", "intensity": 3},
        {"sex": "M", "age_group": "40-49", "race": "BL", "intensity": "2"},
        None,
        {"gender": None, "age": float("nan"), "intensity": 0, "other": "ignored"},
        {"gender": "female", "age": 25, "ethnicity": "WH", "intensity": 3},  # equal to the first: a memo hit
        {"intensity": 4},
    ] * 3
    memoised, plain = PromptBank(config), Uncached(config)
    for _ in range(3):
        assert memoised.sample(labels, metadata, num_views=3) == plain.sample(labels, metadata, num_views=3)
    assert memoised.state_dict() == plain.state_dict()
    memoised.sample(["anger"], [{"intensity": 1}])
    with pytest.raises(ValueError, match="intensity"):  # True == 1 as a dict key, yet it is no intensity
        memoised.sample(["anger"], [{"intensity": True}])


# -- action units ------------------------------------------------------------------------------------------

ANGRY_AUS = {4: 0.8, 7: 0.5, 23: 0.6, 14: 0.05, 12: 0.1}  # strongest first: 4, 23, 7; 14 and 12 inactive


def _au_count(prompts, au):
    return sum(au_description(au) in p for p in prompts)


def test_au_prompts_appear_at_the_configured_rate_only_with_aus():
    labels = ["anger"] * 400
    for prob in (0.0, 0.3, 1.0):
        bank = PromptBank(PromptConfig(seed=1, au_prompt_prob=prob))
        with_aus = [p for row in bank.sample(labels, [{**FULL, "aus": ANGRY_AUS}] * 400, 3) for p in row]
        rate = _au_count(with_aus, 4) / len(with_aus)  # AU4, the strongest, is in every AU prompt
        assert abs(rate - prob) < 0.05, (prob, rate)
        without = [p for row in bank.sample(labels, [FULL] * 400, 3) for p in row]
        assert not any(au_description(au) in p for p in without for au in ANGRY_AUS)
    # No active AU (all below au_min_weight), "aus" unknown, or AU prompts off: no AU prompt.
    bank = PromptBank(PromptConfig(au_prompt_prob=1.0))
    for aus in ({4: 0.1, 7: 0.0}, {}, None, float("nan"), "unknown"):
        rows = bank.sample(["fear"] * 20, [{"aus": aus}] * 20, 3)
        assert not any(au_description(au) in p for row in rows for p in row for au in AU_CATALOGUE)


def test_au_prompts_name_the_strongest_aus_and_the_emotion():
    bank = PromptBank(PromptConfig(seed=2, au_prompt_prob=1.0, au_max_count=2, use_view_phrases=True))
    meta = {"gender": "male", "intensity": 2, "aus": ANGRY_AUS}
    prompts = [p for row in bank.sample(["anger"] * 200, [meta] * 200, 3) for p in row]
    assert not _bad(prompts) and all(p.endswith(".") for p in prompts)
    assert _au_count(prompts, 4) == len(prompts)  # the strongest, always
    assert 0 < _au_count(prompts, 23) < len(prompts)  # the second, in some (1 or 2 AUs named)
    assert _au_count(prompts, 7) == _au_count(prompts, 14) == _au_count(prompts, 12) == 0  # not among the 2
    assert all(p.index(au_description(4)) < p.index(au_description(23)) for p in prompts if "lips tight" in p)
    # Every AU prompt still names the emotion (a sample's prompt for class c must be about c) ...
    words = [w for key in ("adjectives", "nouns") for w in LEXICON["anger"][key]]
    assert all(any(re.search(rf"\b{w}\b", p) for w in words) for p in prompts)
    assert any(" man " in p for p in prompts)  # ... and can carry the other metadata
    # `all_prompts` enumerates them; AU keys may be written 4, "4" or "AU4".
    pool = set(bank.all_prompts("anger", meta, "left"))
    assert set(prompts[1::3]) <= pool
    spelled = {**meta, "aus": {"AU4": 0.8, "7": np.float32(0.5), np.int64(23): np.float32(0.6)}}
    again = PromptBank(PromptConfig(seed=2, au_prompt_prob=1.0, au_max_count=2, use_view_phrases=True))
    assert [p for row in again.sample(["anger"] * 200, [spelled] * 200, 3) for p in row] == prompts
    # Labels outside the lexicon keep their inference-template prompts; enabled=False its one prompt.
    assert all("contempt" in p for row in bank.sample(["contempt"] * 10, [meta] * 10, 3) for p in row)
    off = PromptBank(PromptConfig(enabled=False, au_prompt_prob=1.0)).sample(["anger"], [meta], 2)
    assert off == [["a photo of a face, expression: anger."] * 2]


def test_no_aus_draws_exactly_as_without_au_prompts():
    labels = (EMOTIONS + ["contempt"]) * 3
    meta = [METADATA[i % len(METADATA)] for i in range(len(labels))]
    unknown = [{**(m or {}), "aus": None} for m in meta]
    for kwargs in ({}, {"metadata_dropout": 0.4, "use_view_phrases": True}):
        on = PromptBank(PromptConfig(seed=4, au_prompt_prob=0.5, **kwargs))
        off = PromptBank(PromptConfig(seed=4, au_prompt_prob=0.0, **kwargs))
        for _ in range(3):
            assert on.sample(labels, meta, 3) == off.sample(labels, meta, 3)
            assert on.sample(labels, unknown, 3) == off.sample(labels, meta, 3)
        assert on.state_dict()["rng"] == off.state_dict()["rng"]
        assert on.all_prompts("anger", FULL) == off.all_prompts("anger", {**FULL, "aus": ANGRY_AUS})
    # With au_prompt_prob=0 a sample's "aus" are ignored altogether.
    off = PromptBank(PromptConfig(seed=4, au_prompt_prob=0.0))
    plain = PromptBank(PromptConfig(seed=4, au_prompt_prob=0.0))
    assert off.sample(["fear"] * 9, [{"aus": ANGRY_AUS}] * 9, 3) == plain.sample(["fear"] * 9, None, 3)


@pytest.mark.parametrize(
    "aus",
    [{99: 0.5}, {4: 1.5}, {4: -0.1}, {4: "high"}, {4: True}, {"brow": 0.5}, [4, 7], {4: 0.5, "AU4": 0.2}],
)
def test_bad_aus_raise(aus):
    with pytest.raises(ValueError):
        PromptBank().sample(["anger"], [{"aus": aus}])


@pytest.mark.parametrize(
    "kwargs", [{"au_prompt_prob": 1.2}, {"au_prompt_prob": "0.3"}, {"au_min_weight": 0}, {"au_max_count": 0}]
)
def test_config_rejects_bad_au_settings(kwargs):
    with pytest.raises(ValueError):
        PromptConfig(**kwargs)


def test_au_prompts_cover_the_catalogue_deterministically():
    prompts = au_prompts()
    assert list(prompts) == [f"AU{n} {AU_CATALOGUE[n].name}" for n in sorted(AU_CATALOGUE)]
    assert prompts["AU4 brow lowerer"][0] == "a face with brows lowered and drawn together."
    for texts, number in zip(prompts.values(), sorted(AU_CATALOGUE)):
        assert len(texts) == len(AU_INFERENCE_TEMPLATES) == len(set(texts)) and not _bad(texts)
        assert all(au_description(number) in t for t in texts)
        assert f"{au_description(number)}." in texts
    assert au_prompts() == prompts  # deterministic: no seed, no state
    assert au_prompts([7, "AU4", "4"]) == {
        "AU7 lid tightener": prompts["AU7 lid tightener"],
        "AU4 brow lowerer": prompts["AU4 brow lowerer"],
    }
    assert list(au_prompts([7, 4])) == ["AU7 lid tightener", "AU4 brow lowerer"]
    # No emotion word or metadata in them, and the inference bank has no AU text.
    text = " ".join(t for texts in prompts.values() for t in texts)
    for word in ("angry", "anger", "happy", "sad", "woman", "person", "very"):
        assert not re.search(rf"\b{word}\b", text)
    assert not any(
        d.description in p for d in AU_CATALOGUE.values() for p in inference_prompts(EMOTIONS)[EMOTIONS[0]]
    )
    for bad in ([99], "AU4", ["brow"]):
        with pytest.raises(ValueError):
            au_prompts(bad)


# -- open vocabulary ---------------------------------------------------------------------------------------


def test_held_out_vocabulary_shape_and_matching():
    assert set(HELD_OUT_VOCABULARY) == set(LEXICON)  # the six basic emotions and neutral
    phrases = [p for words in HELD_OUT_VOCABULARY.values() for p in words]
    assert all(5 <= len(words) <= 10 for words in HELD_OUT_VOCABULARY.values())
    assert len(set(phrases)) == len(phrases)
    for phrase in phrases:
        assert find_held_out(f"A face, {phrase.upper()}.") == [phrase]
    assert find_held_out("a deadpanned, unstunned face; Over  the moon") == ["over the moon"]
    # The validation words (for choosing settings) are another list: same shape, no word of the test list.
    assert set(VALIDATION_VOCABULARY) == set(LEXICON)
    validation = [p for words in VALIDATION_VOCABULARY.values() for p in words]
    assert len(set(validation)) == len(validation) and not set(validation) & set(phrases)
    assert all(not find_held_out(p) and find_held_out(p, "validation") == [p] for p in validation)
    # Evaluation code can import it without the prompt sampler or the training code: it imports no project code.
    tree = ast.parse(Path(vocabulary.__file__).read_text())
    imported = [
        n for node in ast.walk(tree) if isinstance(node, ast.Import) for n in (a.name for a in node.names)
    ]
    imported += [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level
    ]
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative and not [m for m in imported if m.split(".")[0] in {"affectvlm", "train"}]


def _training_prompts():
    """A large sample of training prompts over every built-in label, metadata value and many AU sets."""
    genders = [*GENDER_WORDS, *GENDER_ALIASES, None]
    ages = [*AGE_WORDS, *AGE_ALIASES, 20, 40, 50, 80, None]
    ethnicities = [*ETHNICITY_WORDS, *ETHNICITY_ALIASES, None]
    numbers = sorted(AU_CATALOGUE)
    rnd = random.Random(0)
    aus = [dict(zip(pair, (0.9, 0.8))) for pair in itertools.permutations(numbers, 2)]  # every ordered pair
    aus += [{au: rnd.uniform(0.2, 1.0) for au in rnd.sample(numbers, 4)} for _ in range(200)]
    bank = PromptBank(PromptConfig(seed=0, au_prompt_prob=0.5, metadata_dropout=0.2, use_view_phrases=True))
    prompts = set()
    for i, au in enumerate(aus):
        meta = {
            "gender": genders[i % len(genders)],
            "age": ages[i % len(ages)],
            "ethnicity": ethnicities[i % len(ethnicities)],
            "intensity": i % 5,
            "aus": au,
        }
        rows = bank.sample(EMOTIONS, [meta] * len(EMOTIONS), num_views=3)
        prompts.update(p for row in rows for p in row)
    for label in EMOTIONS:  # the enumeration: bare, fully described, and with three AUs
        prompts.update(bank.all_prompts(label))
        prompts.update(bank.all_prompts(label, {**FULL, "aus": ANGRY_AUS}, "frontal"))
        prompts.update(p for v in bank.class_prompts_per_view(EMOTIONS, 8) for ps in v.values() for p in ps)
    return prompts


def test_held_out_vocabulary_never_appears_in_training_prompts():
    prompts = _training_prompts()
    assert len(prompts) > 20_000
    assert all(any(d in p for p in prompts) for d in (au_description(n) for n in AU_CATALOGUE))
    for which in ("held_out", "validation"):
        leaks = {p: find_held_out(p, which) for p in prompts if find_held_out(p, which)}
        assert not leaks, (
            f"{which} words in training prompts (choose other {which} words): {list(leaks.items())[:5]}"
        )
