import re

import pytest

from affectvlm.prompts import INFERENCE_TEMPLATES, LEXICON, PromptBank, PromptConfig, inference_prompts

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
