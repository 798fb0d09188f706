"""Strict checkpoint loading: `AffectVLMModel.from_pretrained` refuses, with a `CheckpointError` (a ValueError)
that names the problem, what transformers would load silently or half-randomly: pickle weights, an empty or
truncated model.safetensors, weights missing tensors, weights holding NaN or Inf."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from affectvlm import AffectVLMModel
from affectvlm.modeling_affectvlm import CheckpointError
from affectvlm.testing import tiny_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[AffectVLMModel, Path]:
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config()).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved[1], tmp_path / "ckpt"))


def _edit_weights(folder: Path, edit) -> None:
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_good_checkpoint_loads_exactly(saved):
    model, folder = saved
    loaded, info = AffectVLMModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0)
    assert isinstance(AffectVLMModel.from_pretrained(folder), AffectVLMModel)  # no tuple unless asked


def test_sharded_safetensors_load(saved, tmp_path):
    model, _ = saved
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (
        tmp_path / "model.safetensors"
    ).exists()
    loaded = AffectVLMModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.margin_raw, model.margin_raw, rtol=0, atol=0)


def test_pickle_weights_are_refused(saved, copy):
    (copy / "model.safetensors").unlink()
    torch.save(saved[0].state_dict(), copy / "pytorch_model.bin")  # transformers would load this silently
    with pytest.raises(
        CheckpointError, match=r"has no model\.safetensors \(only pytorch_model\.bin: pickles"
    ):
        AffectVLMModel.from_pretrained(copy)
    with pytest.raises(CheckpointError, match="safetensors weights only"):
        AutoModel.from_pretrained(copy)  # the Auto class goes through the same check


def test_no_weights_at_all(copy):
    (copy / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"has no model\.safetensors; AffectVLM loads safetensors weights only"
    ):
        AffectVLMModel.from_pretrained(copy)


def test_use_safetensors_false_is_refused(saved):
    with pytest.raises(CheckpointError, match="use_safetensors=False"):
        AffectVLMModel.from_pretrained(saved[1], use_safetensors=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"model\.safetensors is empty \(0 bytes\)"),
        (None, r"the weights cannot be read \(cut short\?\): Error while deserializing"),
    ],
    ids=["empty", "truncated"],
)
def test_empty_or_truncated_weights(copy, content, message):
    path = copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content is None else content)
    with pytest.raises(CheckpointError, match=message):
        AffectVLMModel.from_pretrained(copy)


def test_missing_tensors_are_named(copy):
    def drop(weights):
        del weights["margin_raw"]
        del weights["clip.text_projection.weight"]

    _edit_weights(copy, drop)
    with pytest.raises(CheckpointError, match=r"lack 2 tensor\(s\)") as err:
        AffectVLMModel.from_pretrained(copy)
    assert "clip.text_projection.weight" in str(err.value) and "margin_raw" in str(err.value)
    assert "start random" in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused(copy, bad):
    def poison(weights):
        weights["clip.visual_projection.weight"][0, 0] = bad

    _edit_weights(copy, poison)
    with pytest.raises(
        CheckpointError, match=r"NaN or Inf values in 1 weight tensor\(s\) \(clip\.visual_projection"
    ):
        AffectVLMModel.from_pretrained(copy)


def test_checkpoint_error_is_a_value_error_and_hub_ids_keep_transformers_behaviour():
    assert issubclass(CheckpointError, ValueError)
    # Not a local folder: transformers' own resolution (offline here: its OSError), not ours.
    with pytest.raises(OSError):
        AffectVLMModel.from_pretrained("nobody-at-all/no-such-affectvlm-model")
