"""Text anchors (train/text_anchors.py, `AffectVLMModel.encode_prompts`): a class embedding drawn towards the
trained classes its prompts mean, by `text_anchor_weight`.

What it must do: blend exactly as documented, leave the projection alone when asked (`anchored=False`, weight 0),
follow the model's weights when they change, and write a checkpoint that loads with its anchors on. What it
buys the shipped models on faces (one never-trained word per class) is measured in docs/RESULTS.md; what it
does to their reading of never-trained words is asserted in tests/test_answers_v2.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from affectvlm import AffectVLMConfig, AffectVLMModel, AffectVLMProcessor
from affectvlm.prompts import inference_prompts
from affectvlm.testing import tiny_pretrained_text_model, tiny_processor, tiny_text_encoder
from train import text_anchors as ta

LABELS = ["anger", "happiness", "neutral"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with a pretrained-style text encoder, saved as a checkpoint (no anchors)."""
    encoder = tiny_text_encoder(tmp_path_factory.mktemp("text") / "small", hidden_size=32)
    model = tiny_pretrained_text_model(encoder, LABELS)
    folder = tmp_path_factory.mktemp("trained")
    processor = tiny_processor()
    processor.tokenizer = AutoTokenizer.from_pretrained(encoder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def load(folder):
    return AffectVLMModel.from_pretrained(folder).eval(), AffectVLMProcessor.from_pretrained(folder).tokenizer


def test_the_blend_is_the_weighted_mean_of_the_projection_and_the_meant_classes(trained, monkeypatch):
    model, _ = load(trained)
    ta.set_text_anchors(model, weight=0.25, temperature=0.01)
    keys = torch.eye(4, 32)  # text-space features of four trained classes
    anchors = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    monkeypatch.setattr(model, "_anchor_bank", lambda tokenizer: (keys, anchors))
    projected = F.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    meaning = torch.stack([keys[2], F.normalize(keys[0] + keys[1], dim=-1)])
    out = model._anchor(projected, meaning, tokenizer=None)
    expected = torch.stack(
        [
            F.normalize(0.75 * projected[0] + 0.25 * anchors[2], dim=-1),  # means class 2 alone
            F.normalize(0.75 * projected[1] + 0.25 * F.normalize(anchors[0] + anchors[1], dim=-1), dim=-1),
        ]
    )
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_every_group_of_a_class_anchors_to_the_class_s_own_embedding(trained):
    """A lexicon word's group is a place in the text space that means its class: it pulls towards the class's
    embedding (its first group's, the scoring prompts), not towards its own projection."""
    model, tok = load(trained)
    model.config.text_anchors = {
        "anger": [["an angry face."], ["a furious face."]],
        "happiness": [["a happy face."]],
    }
    model.config.text_anchor_weight = 0.5
    keys, anchors = model._anchor_bank(tok)
    own = model.encode_prompts(["an angry face.", "a furious face.", "a happy face."], tok, anchored=False)
    meaning = model.encode_prompts(
        ["an angry face.", "a furious face.", "a happy face."], tok, projected=False
    )
    torch.testing.assert_close(keys, meaning)
    torch.testing.assert_close(anchors, own[[0, 0, 2]])
    assert (own[1] * own[0]).sum() < 0.9999  # the word's own projection differs from its class's


def test_a_trained_class_keeps_its_embedding_and_costs_no_anchor_work(trained):
    model, tok = load(trained)
    ta.set_text_anchors(model, weight=0.6, temperature=0.03)
    prompts = inference_prompts(LABELS)  # the trained labels' own scoring prompts
    torch.testing.assert_close(
        model.encode_prompts(prompts, tok), model.encode_prompts(prompts, tok, anchored=False)
    )
    assert model._anchor_cache is None  # the anchors were never computed
    mixed = model.encode_prompts({**prompts, "other": ["a face that looks spiffy."]}, tok)
    torch.testing.assert_close(mixed[: len(LABELS)], model.encode_prompts(prompts, tok, anchored=False))
    assert model._anchor_cache is not None


def test_weight_zero_or_anchored_false_is_the_projection_alone(trained):
    model, tok = load(trained)
    prompts = {**inference_prompts(LABELS), "other": ["a face that looks spiffy."]}
    plain = model.encode_prompts(prompts, tok)
    ta.set_text_anchors(model, weight=0.5, temperature=0.05)
    anchored = model.encode_prompts(prompts, tok)
    assert (anchored * plain).sum(-1).min() < 0.9999  # the anchors act
    torch.testing.assert_close(model.encode_prompts(prompts, tok, anchored=False), plain)
    ta.set_text_anchors(model, weight=0.0, temperature=0.05)
    assert model.config.text_anchors is None
    torch.testing.assert_close(model.encode_prompts(prompts, tok), plain)


def test_the_anchors_follow_the_model_s_weights(trained):
    model, tok = load(trained)
    ta.set_text_anchors(model, weight=1.0, temperature=0.05)
    label = {"other": ["a face that looks spiffy."]}  # not a trained class: drawn by the anchors alone (w 1)
    before = model.encode_prompts(label, tok)
    with torch.no_grad():
        model.text_projection.weight.mul_(-1)  # in place, as an optimiser step or a load does
    after = model.encode_prompts(label, tok)
    torch.testing.assert_close(after, -before, atol=1e-5, rtol=0)  # the anchors are its own embeddings again


def test_the_command_writes_a_checkpoint_that_loads_with_its_anchors(trained, tmp_path):
    with pytest.raises(ValueError, match="--out must differ"):
        ta.main(["--model", str(trained), "--out", str(trained)])
    result = ta.main(["--model", str(trained), "--out", str(tmp_path / "anchored")])
    model, tok = load(tmp_path / "anchored")
    assert result["anchors"]["classes"] == len(model.config.text_anchors) == len(LABELS) + 25  # labels, AUs
    anger = model.config.text_anchors["anger"]  # its scoring prompts, then one group per lexicon word
    assert anger[0] == inference_prompts(["anger"])["anger"] and len(anger) > 5
    assert [ta.WORD_PROMPT.format("furious")] in anger
    assert (
        ta.WORD_PROMPT.format("furious") in inference_prompts(["furious"])["furious"]
    )  # one of the templates
    assert model.config.text_anchor_weight == ta.DEFAULT_WEIGHT
    assert model.config.text_anchor_temperature == ta.DEFAULT_TEMPERATURE
    plain, _ = load(trained)
    prompts = {"other": ["a face that looks spiffy."], **inference_prompts(LABELS)}
    assert (model.encode_prompts(prompts, tok) * plain.encode_prompts(prompts, tok)).sum(-1).min() < 0.9999


@pytest.mark.parametrize(
    "field, value",
    [("text_anchor_weight", 1.5), ("text_anchor_temperature", 0.0), ("text_anchors", {"anger": []})],
)
def test_bad_anchor_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field.replace("_weight", "").replace("_temperature", "")):
        AffectVLMConfig(**{field: value})
