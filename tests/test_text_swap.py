"""train/text_swap.py: a trained model given another text encoder, its projection fitted to the trained text
embeddings; everything else it learnt stays as it was.

What it must do: reproduce what the model answered (swapped for its own encoder, every prompt's embedding comes
back), keep every weight that is not the text side's, and write a checkpoint that names the new encoder, carries
its tokenizer and loads on its own."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from affectvlm import AffectVLMModel, AffectVLMProcessor
from affectvlm.prompts import inference_prompts
from affectvlm.testing import tiny_pretrained_text_model, tiny_processor, tiny_text_encoder
from train import text_swap as sw

LABELS = ["anger", "happiness", "neutral"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return tiny_text_encoder(root / "small", hidden_size=32), tiny_text_encoder(
        root / "wide", hidden_size=64, seed=1
    )


@pytest.fixture(scope="module")
def trained(encoders, tmp_path_factory):
    """A tiny model trained (here: initialised) against the small encoder, saved as a checkpoint."""
    model = tiny_pretrained_text_model(encoders[0], LABELS)
    folder = tmp_path_factory.mktemp("trained")
    processor = tiny_processor()
    processor.tokenizer = AutoTokenizer.from_pretrained(encoders[0])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_the_weighted_ridge_fit_recovers_a_linear_map_and_favours_the_served_prompts():
    g = torch.Generator().manual_seed(0)
    x, a = torch.randn(300, 12, generator=g), torch.randn(5, 12, generator=g)
    served = [i < 20 for i in range(300)]
    torch.testing.assert_close(sw.fit_projection(x, x @ a.T, served, 1e-6, 1.0), a, atol=1e-4, rtol=0)
    noisy = (
        x @ a.T
        + torch.randn(300, 5, generator=g) * torch.tensor([0.0 if s else 1.0 for s in served])[:, None]
    )
    err = [
        (x[:20] @ sw.fit_projection(x, noisy, served, 1e-3, w).T - x[:20] @ a.T).norm() for w in (1.0, 1e3)
    ]
    assert (
        err[1] < err[0] / 5
    )  # weighted, the served prompts keep their exact targets despite the others' noise


def test_the_scoring_classes_keep_their_trained_directions_by_the_least_change():
    g = torch.Generator().manual_seed(0)
    w, x, t = torch.randn(6, 20, generator=g), torch.randn(4, 20, generator=g), torch.randn(4, 6, generator=g)
    fixed = sw.keep_class_directions(w, x, t)
    torch.testing.assert_close(
        torch.nn.functional.normalize(x @ fixed.T, dim=-1),
        torch.nn.functional.normalize(t, dim=-1),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close((x @ fixed.T).norm(dim=-1), (x @ w.T).norm(dim=-1), atol=1e-4, rtol=1e-4)
    outside = torch.randn(20, generator=g)
    outside -= x.T @ torch.linalg.solve(x @ x.T, x @ outside)  # orthogonal to every class's features
    torch.testing.assert_close(fixed @ outside, w @ outside, atol=1e-4, rtol=1e-4)  # untouched there


def test_swapped_for_its_own_encoder_a_model_scores_every_prompt_as_before(trained, encoders):
    model = AffectVLMModel.from_pretrained(trained).eval()
    tok = AutoTokenizer.from_pretrained(encoders[0])
    new, new_tok, record = sw.swap_text_encoder(model, tok, str(encoders[0]), ridge=1e-6, served_weight=1.0)
    prompts = {**inference_prompts(LABELS), "other": ["a face that looks spiffy."]}
    before, after = model.encode_prompts(prompts, tok), new.encode_prompts(prompts, new_tok)
    assert (before * after).sum(-1).min() > 0.999
    assert record["cosine_to_trained"]["scoring_prompts_mean"] > 0.999


def test_the_command_keeps_the_view_side_and_writes_a_checkpoint_naming_the_new_encoder(
    trained, encoders, tmp_path
):
    with pytest.raises(ValueError, match="--out must differ"):
        sw.main(["--model", str(trained), "--out", str(trained), "--text-model", str(encoders[1])])
    from test_evaluate import write_cache

    cache = write_cache(tmp_path / "cache")
    args = ["--model", str(trained), "--out", str(tmp_path / "swapped"), "--text-model", str(encoders[1])]
    result = sw.main([*args, "--check", str(cache)])
    assert (
        result["before"]["plain_words"] == result["after"]["plain_words"]
    )  # the trained labels score as before
    assert result["before"]["samples"] == result["after"]["samples"] > 0
    original = AffectVLMModel.from_pretrained(trained)
    swapped = AffectVLMModel.from_pretrained(tmp_path / "swapped")
    processor = AffectVLMProcessor.from_pretrained(tmp_path / "swapped")
    assert swapped.config.text_model_name_or_path == str(encoders[1])
    assert swapped.config.text_config.hidden_size == 64 and swapped.text_projection.weight.shape[1] == 64
    assert processor.tokenizer.vocab == AutoTokenizer.from_pretrained(encoders[1]).vocab
    assert swapped.config.text_swap["prompts"] == result["swap"]["prompts"] > 1000
    kept = {
        k: v
        for k, v in original.state_dict().items()
        if not k.startswith(("text_model.", "text_projection."))
    }
    state = swapped.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in kept.items())
    # the saved projection is the fitted one: the scoring prompts land near the trained model's embeddings
    tok0 = AutoTokenizer.from_pretrained(encoders[0])
    prompts = inference_prompts(LABELS)
    near = (
        original.encode_prompts(prompts, tok0) * swapped.encode_prompts(prompts, processor.tokenizer)
    ).sum(-1)
    torch.manual_seed(1)
    torch.nn.init.normal_(swapped.text_projection.weight)
    chance = (
        original.encode_prompts(prompts, tok0) * swapped.encode_prompts(prompts, processor.tokenizer)
    ).sum(-1)
    assert (
        near.min() > 0.9999
    )  # each label's class embedding is the trained one, so every answer on it is too
    assert chance.mean() < 0.9
