"""The AffectVLM model: config, forward, fusion, view masks, save/load, remote code, zero-shot scoring."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor, CLIPModel, ResNetConfig, ResNetModel

from affectvlm import AffectVLMConfig, AffectVLMModel, AffectVLMProcessor
from affectvlm.testing import tiny_clip_config, tiny_config, tiny_processor

TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}


def make_batch(batch=4, views=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, 3, size, size, generator=g)


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return AffectVLMModel(tiny_config(**overrides)).eval()


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def prompts():
    labels = AffectVLMConfig(clip_config=tiny_clip_config()).label_names
    return {label: [f"a face showing {label}", f"a photo of a person feeling {label}"] for label in labels}


# -- config -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"fusion": "max"},
        {"vision_backbone": "vgg"},
        {"num_views": 0},
        {"num_views": 2, "view_names": ["a", "b", "c"]},
        {"view_names": ["a", "a", "b"]},
        {"label_names": []},
        {"margin_init": 0.6},
        {"margin_min": 0.3, "margin_init": 0.2},
        {"contrastive_weight": -1.0},
        {"triplet_weight": float("nan")},
        {"triplet_mining": "semi"},
        {"smooth_hinge_beta": 0.0},
        {"mirror_average": "yes"},
        {"mirror_negate": {"channel": 3, "mean": [0.5] * 3, "std": [0.25] * 3}},
        {"mirror_negate": {"channel": 1, "mean": [0.5] * 3, "std": [0.25, 0.0, 0.25]}},
        {"mirror_negate": {"channel": 1, "mean": [0.5] * 3}},
        {"mirror_negate": [1, 0.5, 0.25]},
        {"familiarity_floor": 1.5},
        {"familiarity_floor": "0.1"},
        {"familiarity_floor": True},
        {"familiarity_floor": float("nan")},
    ],
)
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_config_defaults_and_round_trip(tmp_path):
    config = tiny_config(fusion="attention", label_names=["anger", "neutral"])
    assert config.view_names == ["frontal", "left", "right"]
    assert tiny_config(num_views=2).view_names == ["view0", "view1"]
    assert AffectVLMConfig().label_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    config.save_pretrained(tmp_path)
    loaded = AffectVLMConfig.from_pretrained(tmp_path)
    assert loaded.fusion == "attention" and loaded.label_names == ["anger", "neutral"]
    assert loaded.clip_config.vision_config.hidden_size == config.clip_config.vision_config.hidden_size


# -- forward ------------------------------------------------------------------------------------------------


def test_mirror_image_of_a_normal_view_is_the_mirrored_face():
    """config.mirror_negate: the mirror image of a view that draws the normal has its x negated on the surface
    (v -> 1 - v in [0, 1] terms) and the background unchanged; it is the flipped view without the setting."""
    from affectvlm.scan import NORMAL_CHANNELS, Scan, normalize_scan, render_views
    from affectvlm.testing import face_mesh

    face = normalize_scan(face_mesh().replace(uv=None))
    mirrored = Scan(face.vertices * torch.tensor([-1.0, 1.0, 1.0]).numpy(), face.faces[:, ::-1].copy())
    processor = tiny_processor(image_size=64)
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std
    for mode, (channel, _) in NORMAL_CHANNELS.items():
        views = render_views([face, mirrored], views=[(0.0, 0.0)], size=64, mode=mode)
        view, truth = processor.normalize_views(views)[:, 0]  # (3, H, W) each
        model = make_model(mirror_negate={"channel": channel, "mean": mean, "std": std})
        got = model.mirror_views(view[None])[0]
        drawn = views[0, 0, :, ::-1].max(-1) > 0, views[1, 0].max(-1) > 0  # the flipped view's, the mirror's
        surface, background = torch.from_numpy(drawn[0] & drawn[1]), torch.from_numpy(~drawn[0] & ~drawn[1])
        diff = (got - truth).abs().permute(1, 2, 0)
        assert diff[surface].mean() < 0.02, mode  # a grey level is 0.015 here: the two renders agree to ~one
        assert diff[background].max() < 1e-5, mode
        plain = make_model().mirror_views(view[None])[0]
        assert torch.equal(plain, view.flip(-1))
        assert (plain - truth)[channel].abs()[surface].mean() > 10 * diff[surface].mean()
    # a grey view (a user's own render, or a shade_normal view shown grey) is its own kind: only flipped
    grey = processor.normalize_views(render_views(face, views=[(0.0, 0.0)], size=64, mode="normal"))[:, 0]
    torch.testing.assert_close(model.mirror_views(grey), grey.flip(-1))
    # the same in bf16, as served on CPUs with matrix units: rounding moves no pixel between the surface and the
    # background, and makes no grey view a normal one (every view of three, each mode)
    both = processor.normalize_views(render_views(face, size=64, mode="shade_normal"))[0]
    for x in (grey, view[None], both):
        half = model.mirror_views(x.to(torch.bfloat16)).float()
        assert (half - model.mirror_views(x)).abs().max() < 0.02


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_forward_shapes_and_finite_loss(fusion, processor, prompts):
    model = make_model(fusion=fusion)
    tokens = processor(text=[p for ps in prompts.values() for p in ps])
    input_ids = tokens["input_ids"].reshape(6, 2, -1)
    attention_mask = tokens["attention_mask"].reshape(6, 2, -1)
    labels = torch.tensor([0, 1, 2, 0])
    out = model(make_batch(), input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (4, 6)
    assert out.logits_per_view.shape == (4, 3, 6)
    assert out.view_embeds.shape == (4, 3, 32)
    assert out.fused_embeds.shape == (4, 32)
    assert out.class_embeds.shape == (6, 32)
    assert set(out.loss_terms) == {"itc", "view_itc", "contrastive", "triplet"}
    assert all(torch.isfinite(v) for v in out.loss_terms.values())
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.view_embeds.norm(dim=-1), torch.ones(4, 3), atol=1e-5)
    assert torch.allclose(out.view_weights.sum(-1), torch.ones(4))
    assert 0.0 < float(out.margin) < 0.5


def test_all_views_in_one_vision_call():
    model = make_model()
    calls = []
    handle = model.clip.vision_model.register_forward_hook(lambda m, i, o: calls.append(1))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    model(make_batch(batch=2), view_mask=mask)
    handle.remove()
    assert len(calls) == 1


def test_mirror_average_reads_a_face_and_its_mirror_image_alike():
    """config.mirror_average: each view's embedding is the normalised mean of its own and its mirror image's, so
    an input and its horizontal mirror get the same embeddings; without it (or in training) they differ."""
    pixels = make_batch(batch=2)
    mask = torch.ones(2, 3, dtype=torch.bool)
    plain, mirror = make_model(), make_model(mirror_average=True)
    own, flipped = (plain.get_view_embeddings(x, mask) for x in (pixels, pixels.flip(-1)))
    assert not torch.allclose(own, flipped, atol=1e-4)
    expected = torch.nn.functional.normalize(own + flipped, dim=-1)
    torch.testing.assert_close(mirror.get_view_embeddings(pixels, mask), expected)
    torch.testing.assert_close(mirror.get_view_embeddings(pixels.flip(-1), mask), expected)
    calls, encode = [], mirror.encode_images
    mirror.encode_images = lambda x: calls.append(len(x)) or encode(x)
    mirror.get_view_embeddings(pixels, torch.tensor([[True, False, True], [True, True, True]]))
    assert calls == [5, 5]  # the five available views, then their mirror images
    mirror.train()
    torch.testing.assert_close(mirror.get_view_embeddings(pixels, mask), own)  # training draws its own flips


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_masking_a_view_equals_removing_it(fusion):
    model = make_model(fusion=fusion)
    pixels = make_batch()
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    labels = torch.tensor([0, 1, 0, 2])
    mask = torch.tensor([True, True, False])[None].expand(4, -1)
    # Garbage in the masked slot must not matter.
    masked_pixels = pixels.clone()
    masked_pixels[:, 2] = 1e3
    masked = model(masked_pixels, view_mask=mask, class_embeds=class_embeds, labels=labels)
    removed = model(pixels[:, :2], class_embeds=class_embeds, labels=labels)
    torch.testing.assert_close(masked.fused_embeds, removed.fused_embeds)
    torch.testing.assert_close(masked.logits, removed.logits)
    torch.testing.assert_close(masked.loss, removed.loss)
    for name in removed.loss_terms:
        torch.testing.assert_close(masked.loss_terms[name], removed.loss_terms[name])


def test_one_view_alone_still_scores():
    model = make_model()
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    mask = torch.tensor([[False, True, False]])
    scores = model.score(make_batch(batch=1), class_embeds, view_mask=mask)
    assert torch.allclose(scores.probs.sum(), torch.tensor(1.0))
    assert scores.view_weights.tolist() == [[0.0, 1.0, 0.0]]
    alone = model.score(make_batch(batch=1)[:, 1:2], class_embeds)
    torch.testing.assert_close(scores.probs, alone.probs)


def test_bad_inputs_are_rejected_clearly():
    model = make_model()
    with pytest.raises(ValueError, match="no available view"):
        model(make_batch(batch=2), view_mask=torch.tensor([[True, True, True], [False, False, False]]))
    with pytest.raises(ValueError, match=r"\(B, V, 3, H, W\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="view_mask must have shape"):
        model(make_batch(batch=2), view_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs labels"):
        model(make_batch(batch=2), return_loss=True)


def test_gradients_reach_clip_and_margin():
    # Contrastive alone: with every hinge active the contrastive and triplet margin gradients cancel
    # exactly (-1 and +1), so use one term to see alpha's gradient.
    model = make_model(triplet_weight=0.0).train()
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    out = model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert model.margin_raw.grad is not None and model.margin_raw.grad.abs() > 0
    assert model.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert model.clip.logit_scale.grad is not None


def test_text_tower_gets_gradient_from_prompts(processor, prompts):
    model = make_model().train()
    tokens = processor(text=[ps[0] for ps in prompts.values()])
    out = model(
        make_batch(),
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
        labels=torch.tensor([0, 1, 2, 3]),
    )
    out.loss.backward()
    assert model.clip.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0


def test_fixed_margin_gets_no_gradient():
    model = make_model(learnable_margin=False, triplet_weight=0.0).train()
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert model.margin_raw.grad is None
    assert float(model.margin) == pytest.approx(0.2)


def test_zero_weight_terms_are_skipped():
    model = make_model(contrastive_weight=0.0, triplet_weight=0.0, view_itc_weight=0.0)
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    out = model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0]))
    assert set(out.loss_terms) == {"itc"}


def test_per_view_prompts():
    model = make_model()
    class_embeds = torch.nn.functional.normalize(torch.randn(3, 6, 32), dim=-1)  # (V, C, D)
    out = model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 6) and out.logits_per_view.shape == (4, 3, 6)
    expected = out.logit_scale * torch.einsum(
        "bd,bd->b", out.view_embeds[:, 1], class_embeds[1][[0, 1, 2, 0]]
    )
    torch.testing.assert_close(out.logits_per_view[torch.arange(4), 1, [0, 1, 2, 0]], expected)


def test_per_sample_per_view_prompts():
    model = make_model()
    class_embeds = torch.nn.functional.normalize(torch.randn(4, 3, 6, 32), dim=-1)  # (B, V, C, D)
    out = model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 6) and torch.isfinite(out.loss)
    fused_classes = torch.nn.functional.normalize(class_embeds[2].mean(0), dim=-1)
    torch.testing.assert_close(out.logits[2], out.logit_scale * fused_classes @ out.fused_embeds[2])
    with pytest.raises(ValueError, match="class_embeds must be"):
        model(make_batch(), class_embeds=torch.randn(32))


# -- ResNet backbone ----------------------------------------------------------------------------------------


def test_resnet_backbone_forward_and_no_clip_vit():
    model = make_model(vision_backbone="resnet", resnet_config=TINY_RESNET)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("clip.vision_model") for n in names)
    assert any(n.startswith("vision_resnet") for n in names)
    class_embeds = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    out = model(make_batch(), class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 0]))
    assert out.view_embeds.shape == (4, 3, 32) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.resnet_projection.weight.grad.abs().sum() > 0


# -- save / load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"fusion": "attention"}, {"vision_backbone": "resnet", "resnet_config": TINY_RESNET}],
    ids=["clip-mean", "clip-attention", "resnet"],
)
def test_save_and_reload_gives_identical_outputs(tmp_path, overrides):
    model = make_model(**overrides)
    with torch.no_grad():
        model.margin_raw.fill_(0.7)  # a non-default value must survive the round trip
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AffectVLMModel.from_pretrained(tmp_path).eval()
    pixels, class_embeds = make_batch(), torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        a = model(pixels, class_embeds=class_embeds, labels=labels)
        b = loaded(pixels, class_embeds=class_embeds, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    torch.testing.assert_close(a.margin, b.margin, rtol=0, atol=0)


def test_auto_classes_load_without_remote_code(tmp_path, processor):
    make_model().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoModel.from_pretrained(tmp_path), AffectVLMModel)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), AffectVLMProcessor)


def test_remote_code_load_from_outside_the_repo(tmp_path, processor):
    folder = tmp_path / "checkpoint"
    model = make_model(fusion="attention")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_affectvlm.AffectVLMModel"
    for name in ("configuration_affectvlm.py", "modeling_affectvlm.py", "processing_affectvlm.py"):
        assert (folder / name).is_file()
    pixels = make_batch(batch=2)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    with torch.no_grad():
        expected = model(pixels).fused_embeds.numpy()
    np.save(tmp_path / "expected.npy", expected)
    # `affectvlm` is made unimportable: only the files in the folder may be used.
    code = textwrap.dedent(f"""
        import sys
        sys.modules["affectvlm"] = None
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__name__ == "AffectVLMModel" and "transformers_modules" in type(model).__module__
        assert type(processor).__name__ == "AffectVLMProcessor"
        with torch.no_grad():
            out = model(torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))).fused_embeds.numpy()
        np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6)
        print("REMOTE-OK")
    """)
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "REMOTE-OK" in run.stdout


def test_remote_code_files_import_only_torch_transformers_and_each_other():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "affectvlm"
    # torch, transformers, numpy (a transformers dependency) and the standard library modules used
    allowed = {"torch", "transformers", "numpy", "math", "dataclasses", "collections", "typing", "__future__"}
    allowed |= {"importlib", "os", "re"}
    allowed |= {"hashlib", "shutil", "tempfile", "zipfile"}  # a text encoder shipped as a zip cut into packages
    for name in ("configuration_affectvlm.py", "modeling_affectvlm.py", "processing_affectvlm.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:  # relative imports are siblings, copied alongside
                    continue
                mods = [node.module.split(".")[0]]
            else:
                continue
            assert set(mods) <= allowed, f"{name} imports {mods}"


# -- starting from CLIP -------------------------------------------------------------------------------------


def test_from_clip_loads_clip_weights(tmp_path, processor):
    torch.manual_seed(1)
    clip = CLIPModel(tiny_clip_config())
    clip.save_pretrained(tmp_path / "clip")
    processor.tokenizer.save_pretrained(tmp_path / "clip")
    processor.image_processor.save_pretrained(tmp_path / "clip")
    model = AffectVLMModel.from_clip(str(tmp_path / "clip"), fusion="attention", label_names=["a", "b"])
    for key, value in clip.state_dict().items():
        torch.testing.assert_close(model.clip.state_dict()[key], value, rtol=0, atol=0)
    assert model.config.fusion == "attention" and model.config.label_names == ["a", "b"]
    # The tokenizer saved with the CLIP checkpoint is found without passing it.
    embeds = model.encode_prompts(["a happy face", "a sad face"])
    assert embeds.shape == (2, 32)
    built = AffectVLMProcessor.from_clip(str(tmp_path / "clip"))
    assert type(built.image_processor).__name__ == "CLIPImageProcessorPil"


def test_from_clip_with_resnet_backbone(tmp_path):
    torch.manual_seed(2)
    CLIPModel(tiny_clip_config()).save_pretrained(tmp_path / "clip")
    resnet = ResNetModel(ResNetConfig(**TINY_RESNET))
    resnet.save_pretrained(tmp_path / "resnet")
    model = AffectVLMModel.from_clip(
        str(tmp_path / "clip"), vision_backbone="resnet", resnet_name_or_path=str(tmp_path / "resnet")
    )
    for key, value in resnet.state_dict().items():
        torch.testing.assert_close(model.vision_resnet.state_dict()[key], value, rtol=0, atol=0)


# -- zero-shot scoring --------------------------------------------------------------------------------------


def test_encode_prompts_and_score(processor, prompts):
    model = make_model(fusion="attention")
    class_embeds = model.encode_prompts(prompts, tokenizer=processor.tokenizer)
    assert class_embeds.shape == (6, 32)
    torch.testing.assert_close(class_embeds.norm(dim=-1), torch.ones(6))
    # The class embedding is the re-normalised mean of the normalised prompt embeddings.
    tokens = processor(text=prompts["fear"])
    each = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    torch.testing.assert_close(class_embeds[2], torch.nn.functional.normalize(each.mean(0), dim=-1))
    pixels = make_batch()
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True], [True, True, True]])
    scores = model.score(pixels, class_embeds, view_mask=mask)
    torch.testing.assert_close(scores.probs.sum(-1), torch.ones(4))
    torch.testing.assert_close(scores.view_contributions.sum(1), scores.logits)
    assert (scores.view_contributions[~mask] == 0).all()
    # Scoring with cached class embeddings equals the forward pass.
    with torch.no_grad():
        out = model(pixels, view_mask=mask, class_embeds=class_embeds)
    torch.testing.assert_close(scores.logits, out.logits)


def test_encode_prompts_rejects_empty(processor):
    model = make_model()
    with pytest.raises(ValueError, match="non-empty prompt"):
        model.encode_prompts({"happiness": []}, tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match="non-empty prompt"):
        model.encode_prompts({"happiness": ["  "]}, tokenizer=processor.tokenizer)


def test_encode_prompts_without_tokenizer_says_what_to_do():
    with pytest.raises(ValueError, match="tokenizer="):
        make_model().encode_prompts(["a face"])


def test_shipped_demo_checkpoint_carries_the_current_remote_code():
    """The demo checkpoint's copies of the model files are what `trust_remote_code` loads: keep them current."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    demo = root / "checkpoints" / "affectvlm-cpu"
    if not (demo / "config.json").is_file():
        pytest.fail(f"the demo checkpoint is missing from {demo}")
    for name in ("configuration_affectvlm.py", "modeling_affectvlm.py", "processing_affectvlm.py"):
        assert (demo / name).read_text() == (root / "affectvlm" / name).read_text(), (
            f"{demo / name} is stale: copy affectvlm/{name} over it (or re-save the checkpoint)"
        )
