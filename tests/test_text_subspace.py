"""train/text_subspace.py: the text projection restricted to the span of the trained concepts' prompt centroids.

What it must do: leave every trained concept (each label's and each action unit's prompt centroid, and the
overall mean) exactly where the trained projection put it, and make the part of a sentence's features outside
those concepts (what no training prompt ever constrained) count for nothing."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from affectvlm import AffectVLMModel, AffectVLMProcessor
from affectvlm.prompts import inference_prompts
from affectvlm.testing import tiny_pretrained_text_model, tiny_processor, tiny_text_encoder
from train import text_subspace as ts

LABELS = ["anger", "happiness", "neutral"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_text_encoder(tmp_path_factory.mktemp("text") / "bert", hidden_size=48)


def _model(encoder) -> AffectVLMModel:
    return tiny_pretrained_text_model(encoder, LABELS)


def test_the_basis_is_orthonormal_and_spans_the_mean_and_every_centroid():
    g = torch.Generator().manual_seed(0)
    features = {name: torch.randn(n, 20, generator=g) + 3 for name, n in (("a", 5), ("b", 9), ("c", 4))}
    features["d"] = (features["a"].mean(0) + features["b"].mean(0)).expand(3, 20) / 2  # a dependent centroid
    q = ts.concept_basis(features)
    assert q.shape == (20, 3)  # 4 centroids, one of them dependent on the others (the mean is in their span)
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-5, rtol=0)
    mean = torch.cat(list(features.values())).mean(0)
    for v in [mean, *(f.mean(0) for f in features.values())]:
        torch.testing.assert_close(q @ (q.T @ v), v, atol=1e-4, rtol=0)


def test_concepts_are_the_labels_and_action_units():
    prompts = ts.concept_prompts(LABELS)
    assert set(LABELS) <= set(prompts)
    assert "AU12 trained" in prompts and "AU12 lip corner puller scoring" in prompts
    assert all("lip corners pulled up" in p or "corners" in p for p in prompts["AU12 trained"])
    assert not {"anger", "happiness"} & {w for p in prompts["neutral"] for w in p.rstrip(".").split()}


def test_trained_concepts_stay_and_the_untrained_rest_counts_for_nothing(encoder):
    model = _model(encoder)
    tok = AutoTokenizer.from_pretrained(encoder)
    before = model.text_projection.weight.detach().clone()
    features = {
        name: ts.pooled_features(model, tok, group) for name, group in ts.concept_prompts(LABELS).items()
    }
    basis = ts.restrict_text_projection(model, tok)
    after = model.text_projection.weight.detach()
    q = ts.concept_basis(features)
    torch.testing.assert_close(basis, q)
    assert q.shape[1] == model.config.text_subspace["rank"] <= len(features)
    for f in features.values():  # each concept's centroid projects exactly as before
        c = f.mean(0)
        torch.testing.assert_close(after @ c, before @ c, atol=1e-4, rtol=1e-4)
    outside = torch.randn(q.shape[0])
    outside -= q @ (q.T @ outside)  # a direction no training prompt's centroid has
    assert (before @ outside).norm() > 0.1 and (after @ outside).norm() < 1e-4
    # A sentence's embedding now depends only on its features' part inside the concepts' span.
    text = ts.pooled_features(model, tok, ["a face that looks spiffy."])[0]
    inside = q @ (q.T @ text)
    torch.testing.assert_close(after @ text, after @ inside, atol=1e-4, rtol=1e-4)


def test_the_command_writes_a_new_checkpoint_and_keeps_the_original(encoder, tmp_path):
    model = _model(encoder)
    processor = tiny_processor()
    processor.tokenizer = AutoTokenizer.from_pretrained(encoder)
    model.save_pretrained(tmp_path / "trained")
    processor.save_pretrained(tmp_path / "trained")
    with pytest.raises(ValueError, match="--out must differ"):
        ts.main(["--model", str(tmp_path / "trained"), "--out", str(tmp_path / "trained")])
    result = ts.main(["--model", str(tmp_path / "trained"), "--out", str(tmp_path / "restricted")])
    original = AffectVLMModel.from_pretrained(tmp_path / "trained")
    restricted = AffectVLMModel.from_pretrained(tmp_path / "restricted")
    AffectVLMProcessor.from_pretrained(tmp_path / "restricted")  # the processor came along
    w0, w1 = original.text_projection.weight.detach(), restricted.text_projection.weight.detach()
    torch.testing.assert_close(w0, model.text_projection.weight.detach())  # untouched
    # the restricted projection acts through the concept subspace only, a proper subspace of the encoder's space
    assert torch.linalg.matrix_rank(w1) <= result["subspace"]["rank"] < model.config.text_config.hidden_size
    assert not torch.allclose(w0, w1)
    assert restricted.config.text_subspace["rank"] == result["subspace"]["rank"]


def _train(encoder, out, *settings: str) -> None:
    """A 3-step tiny run with the pretrained text encoder, as a user runs train/train.py."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "train" / "train.py"), "--config", "tiny", "--output-dir", str(out),
           "--no-progress", "--set", "model.affectvlm.text_backbone=pretrained",
           "--set", f"model.affectvlm.text_model_name_or_path={encoder}",
           "--set", "train.max_steps=3", "--set", "train.eval_every=3"]  # fmt: skip
    for setting in settings:
        cmd += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_run_trained_in_the_subspace_keeps_its_projection_there(encoder, tmp_path):
    """model.text_subspace=true: the projection starts in the concept subspace and stays there every step."""
    out = tmp_path / "run"
    _train(encoder, out, "model.text_subspace=true")
    model = AffectVLMModel.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    basis, info = ts.concept_subspace(model, tok)
    assert model.config.text_subspace["rank"] == info["rank"] < basis.shape[0]
    w = model.text_projection.weight.detach()
    torch.testing.assert_close(w @ basis @ basis.T, w, atol=1e-5, rtol=1e-4)  # nothing outside the subspace
    assert w.norm() > 0.1


def test_the_text_encoders_own_word_placement(encoder, monkeypatch):
    """evaluate.py's language-side ceiling: a class's own word sits nearest it; a swapped word does not.
    (A random tiny encoder maps every prompt to nearly the same point, so the encoder's own space is stood in
    for by bags of words here.)"""
    from train.evaluate import _encoder_word_placement

    vocab = sorted(
        {w for p in inference_prompts(LABELS + ["cheerful"]).values() for t in p for w in t.split()}
    )

    def bag_of_words(prompts, tokenizer=None, projected=True):
        assert not projected  # the placement is measured before the projection
        rows = []
        for group in prompts.values():
            counts = torch.zeros(len(vocab))
            for text in group:
                for word in text.split():
                    counts[vocab.index(word)] += 1
            rows.append(counts)
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    model = _model(encoder)
    monkeypatch.setattr(model, "encode_prompts", bag_of_words)
    own = {label: (label,) for label in LABELS}
    swapped = {"anger": ("happiness",), "happiness": ("neutral",), "neutral": ("anger",)}
    assert _encoder_word_placement(model, None, LABELS, own) == 1.0
    assert _encoder_word_placement(model, None, LABELS, swapped) == 0.0
    mixed = {"anger": ("anger", "neutral"), "happiness": ("cheerful", "happiness"), "neutral": ("neutral",)}
    assert _encoder_word_placement(model, None, LABELS, mixed) == pytest.approx(3 / 5)


def test_a_fine_tune_with_the_projection_frozen_moves_only_the_view_side(encoder, tmp_path):
    """model.freeze_text_projection=true: every class embedding stays where the checkpoint had it."""
    from safetensors.torch import load_file

    _train(encoder, tmp_path / "start", "train.lr=3e-3")
    start = tmp_path / "start" / "model"
    _train(encoder, tmp_path / "tuned", "model.init=checkpoint", f"model.checkpoint={start}",
           "model.freeze_text_projection=true", "train.lr=3e-3")  # fmt: skip
    before = load_file(str(start / "model.safetensors"))
    after = load_file(str(tmp_path / "tuned" / "model" / "model.safetensors"))
    assert torch.equal(before["text_projection.weight"], after["text_projection.weight"])
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("resnet" in k or "vision" in k for k in moved), moved
