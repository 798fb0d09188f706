"""A checkpoint's prompt features (`affectvlm.prompt_features`): the frozen text encoder's pooled features of the
prompts a predictor serves with by default, saved beside the weights so that loading does not encode them again.

What must hold: the answers are the same with them and without them; with them, serving the default labels,
the action units and the label check runs no text encoder; a file of another encoder, a damaged one or a
hostile one is passed over with a warning and never changes an answer; and the shipped checkpoints carry a
complete, current file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from affectvlm import AffectVLMPredictor
from affectvlm import prompt_features as pf
from affectvlm.predictor import CHECKPOINTS, shipped_models
from affectvlm.testing import tiny_pretrained_text_model, tiny_processor, tiny_text_encoder
from hub.common import PROMPT_FEATURES
from train import text_anchors as ta

LABELS = ["anger", "happiness", "neutral"]
NEW = ["livid", "a person in pain"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with a frozen pretrained-style text encoder and anchors, saved with its prompt features."""
    encoder = tiny_text_encoder(tmp_path_factory.mktemp("text") / "small", hidden_size=32)
    model = tiny_pretrained_text_model(encoder, LABELS)
    ta.set_text_anchors(model, weight=0.5, temperature=0.05)
    folder = tmp_path_factory.mktemp("ckpt")
    processor = tiny_processor()
    processor.tokenizer = AutoTokenizer.from_pretrained(encoder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert pf.write(folder) > 0
    return folder


class EncoderRan(AssertionError):
    pass


def _forbid_encoder(predictor, monkeypatch):
    def refuse(*args, **kwargs):
        raise EncoderRan("the text encoder ran")

    monkeypatch.setattr(predictor.model.text_model, "forward", refuse)


def _answers(predictor) -> dict:
    """Every text-side answer a request uses: default labels, never-trained words (anchored), the label check."""
    _, default = predictor.class_embeddings()
    _, new = predictor.class_embeddings(NEW)
    checks = [(c.label, c.understood) for c in predictor.check_labels(NEW)]
    return {"default": default, "new": new, "checks": checks}


def _copy(checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    return folder


def test_with_saved_features_the_default_prompts_run_no_encoder_and_answer_the_same(checkpoint, monkeypatch):
    """In float32, the precision `prompt_features.write` encodes in, the saved features are the live answer exactly
    (served in bf16, on CPUs with AMX or AVX512-BF16, see the test below)."""
    live = _answers(AffectVLMPredictor.from_pretrained(checkpoint, prompt_features=False, dtype=torch.float32))
    served = AffectVLMPredictor.from_pretrained(checkpoint, dtype=torch.float32)
    _forbid_encoder(served, monkeypatch)
    served.warm_up()
    _, default = served.class_embeddings()
    torch.testing.assert_close(default, live["default"], rtol=0, atol=1e-6)
    # a word no file holds is encoded when asked (here: refused, to show it is not in the file) ...
    with pytest.raises(EncoderRan):
        served.class_embeddings(["a word nobody saved", "nor this one"])
    monkeypatch.undo()
    # ... and with the encoder back, every answer equals the one computed from scratch
    again = _answers(served)
    torch.testing.assert_close(again["new"], live["new"], rtol=0, atol=1e-6)
    assert again["checks"] == live["checks"]


def test_served_in_bf16_the_saved_features_are_nearer_the_float32_answer_than_encoding_again(checkpoint):
    """A bf16 predictor (the default where the CPU has AMX or AVX512-BF16) takes the float32 features as they were saved: its
    default class embeddings differ from the float32 answer only by the bf16 projection, less than a bf16 encoder's
    own answer does (here 0.0009 against 0.0014)."""
    exact = AffectVLMPredictor.from_pretrained(checkpoint, prompt_features=False, dtype=torch.float32)
    live = AffectVLMPredictor.from_pretrained(checkpoint, prompt_features=False, dtype=torch.bfloat16)
    served = AffectVLMPredictor.from_pretrained(checkpoint, dtype=torch.bfloat16)
    truth = exact.class_embeddings()[1].float()
    off_served = (served.class_embeddings()[1].float() - truth).abs().max()
    off_live = (live.class_embeddings()[1].float() - truth).abs().max()
    assert off_served <= off_live and off_served < 5e-3, (off_served, off_live)


def test_the_pipeline_door_takes_the_saved_features_and_answers_the_same(checkpoint, monkeypatch):
    """`pipeline(model=folder, trust_remote_code=True)` serves through the package's predictor: its first answer
    to the default labels encodes no prompt but the two the loading check encodes again, and equals the answer
    computed from scratch."""
    from PIL import Image
    from transformers import pipeline

    rng = np.random.default_rng(0)
    views = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    live = AffectVLMPredictor.from_pretrained(checkpoint, prompt_features=False, dtype=torch.float32)
    expected = live(images=views, labels=LABELS)
    classifier = pipeline(model=str(checkpoint), trust_remote_code=True, device="cpu")
    encoded, forward = [], classifier.model.text_model.forward

    def counting(*args, **kwargs):
        out = forward(*args, **kwargs)
        encoded.append(out.last_hidden_state.shape[0])
        return out

    monkeypatch.setattr(classifier.model.text_model, "forward", counting)
    rows = classifier(images=views, candidate_labels=LABELS)
    assert 0 < sum(encoded) <= 2, f"the first answer encoded {sum(encoded)} prompts"
    got = {row["label"]: row["score"] for row in rows}
    assert got == pytest.approx(dict(zip(expected.labels, expected.probs.tolist())), abs=1e-5)


def test_features_of_another_encoder_are_passed_over_and_change_no_answer(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path)
    tensors = load_file(str(folder / pf.FILENAME))
    tensors["features"] = torch.randn_like(tensors["features"])  # same prompts and width, another sense
    save_file(tensors, str(folder / pf.FILENAME))
    live = _answers(AffectVLMPredictor.from_pretrained(checkpoint, prompt_features=False))
    with pytest.warns(UserWarning, match="not this text encoder's features"):
        predictor = AffectVLMPredictor.from_pretrained(folder)
    assert predictor.model.text_memo()[0] == []
    got = _answers(predictor)
    torch.testing.assert_close(got["default"], live["default"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["new"], live["new"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda path: path.write_bytes(b"\x00" * 64), "unreadable"),
        (lambda path: save_file({"features": torch.zeros(2, 32)}, str(path)), "not a prompt-features file"),
        (lambda path: _edit(path, lengths=lambda t: t + 1), "do not match"),
        (lambda path: _edit(path, input_ids=lambda t: t + 10**6), "beyond the text encoder's vocabulary"),
        (lambda path: _edit(path, input_ids=lambda t: t - 10**6), "beyond the text encoder's vocabulary"),
        (lambda path: _edit(path, features=lambda t: t * float("nan")), "non-finite"),
    ],
)
def test_a_damaged_or_hostile_file_is_passed_over_with_a_warning(checkpoint, tmp_path, damage, why):
    folder = _copy(checkpoint, tmp_path)
    damage(folder / pf.FILENAME)
    with pytest.warns(UserWarning, match=why) as caught:
        predictor = AffectVLMPredictor.from_pretrained(folder)
    assert predictor.model.text_memo()[0] == []
    assert not [w for w in caught if str(tmp_path) in str(w.message)]  # the problem, not the server's folders


def _edit(path, **changes):
    tensors = load_file(str(path))
    for key, change in changes.items():
        tensors[key] = change(tensors[key])
    save_file(tensors, str(path))


def test_a_file_larger_than_any_prompt_features_is_not_read(checkpoint, tmp_path, monkeypatch):
    folder = _copy(checkpoint, tmp_path)
    monkeypatch.setattr(pf, "MAX_BYTES", 100)
    with pytest.warns(UserWarning, match="larger than"):
        AffectVLMPredictor.from_pretrained(folder)


def test_the_hub_tools_name_the_file_as_the_library_does():
    assert PROMPT_FEATURES == pf.FILENAME


@pytest.mark.parametrize("name", shipped_models())
def test_each_shipped_checkpoint_serves_its_default_prompts_from_its_current_file(name, monkeypatch):
    """A shipped model's file holds every prompt the default path encodes (nothing runs the encoder at warm-up)
    and agrees with the encoder now (probed at load: a stale or foreign file would have been passed over). After
    a change to the prompts: `python -c "from affectvlm.prompt_features import write; write('checkpoints/NAME')"`."""
    assert (CHECKPOINTS / name / pf.FILENAME).is_file()
    predictor = AffectVLMPredictor.from_pretrained(name)
    assert len(predictor.model.text_memo()[0]) > 0
    _forbid_encoder(predictor, monkeypatch)
    predictor.warm_up()
    config = predictor.model.config
    if config.text_anchor_weight > 0 and config.text_anchors:
        predictor.model._anchor_bank(predictor.processor.tokenizer)
