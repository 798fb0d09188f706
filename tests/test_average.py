"""train/average.py: the mean of fine-tuned relatives' weights (how the shipped default's last step was made)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm import AffectVLMModel, face_distance  # noqa: E402
from affectvlm.testing import tiny_config  # noqa: E402
from train.average import average_models  # noqa: E402


def saved(tmp_path: Path, name: str, seed: int, **overrides) -> Path:
    torch.manual_seed(seed)
    model = AffectVLMModel(tiny_config(**overrides))
    folder = tmp_path / name
    model.save_pretrained(folder)
    return folder


def test_the_mean_of_two_models(tmp_path):
    a = saved(tmp_path, "a", 0, temperature=1.3, au_logit_bias={"12": -1.0, "4": 0.5})
    b = saved(tmp_path, "b", 1, temperature=1.1, au_logit_bias={"12": 0.0, "4": 1.5}, familiarity_floor=0.1)
    fitted = face_distance.FaceDistance(np.zeros((1, 32)), np.eye(32), ["happiness"], 5.0)
    face_distance.save(fitted, b)
    mean = AffectVLMModel.from_pretrained(average_models([a, b], tmp_path / "mean"))
    ma, mb = AffectVLMModel.from_pretrained(a), AffectVLMModel.from_pretrained(b)
    for (name, pa), pb, pm in zip(ma.state_dict().items(), mb.state_dict().values(), mean.state_dict().values()):
        if pa.is_floating_point():
            torch.testing.assert_close(pm, (pa + pb) / 2, msg=name)
    config = json.loads((tmp_path / "mean" / "config.json").read_text())
    assert config["temperature"] == 1.0  # calibrate again
    assert config["familiarity_floor"] is None  # fitted on the last model's weights, not the mean's
    assert not (tmp_path / "mean" / face_distance.FILENAME).exists()  # likewise
    assert config["au_logit_bias"] == {"12": -0.5, "4": 1.0}


def test_models_of_different_shapes_are_refused(tmp_path):
    a = saved(tmp_path, "a", 0)
    b = saved(tmp_path, "b", 0, fusion="attention")
    with pytest.raises(ValueError, match="names or shapes"):
        average_models([a, b], tmp_path / "mean")
    with pytest.raises(ValueError, match="at least two"):
        average_models([a], tmp_path / "mean")
