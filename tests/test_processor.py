"""AffectVLMProcessor: every accepted form of views, clear errors for the rest, and the tensor fast path."""

import numpy as np
import pytest
import torch
from PIL import Image

from affectvlm import AffectVLMProcessor
from affectvlm.testing import tiny_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=32)


def rgb(seed, size=(40, 48)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_one_sample_as_list_and_as_dict_agree(processor):
    views = [rgb(0), rgb(1), rgb(2)]
    as_list = processor(images=views)
    as_dict = processor(images={"right": views[2], "frontal": views[0], "left": views[1]})
    assert as_list["pixel_values"].shape == (1, 3, 3, 32, 32)
    torch.testing.assert_close(as_list["pixel_values"], as_dict["pixel_values"])
    assert as_list["view_mask"].all()


def test_batch_with_missing_views(processor):
    batch = [[rgb(0), None, rgb(2)], {"left": Image.fromarray(rgb(3))}]
    out = processor(images=batch)
    assert out["pixel_values"].shape == (2, 3, 3, 32, 32)
    assert out["view_mask"].tolist() == [[True, False, True], [False, True, False]]
    assert (out["pixel_values"][0, 1] == 0).all()


def test_image_modes_are_converted(processor):
    grey = Image.fromarray(rgb(0)[..., 0], mode="L")
    rgba = Image.fromarray(np.dstack([rgb(1), np.full((40, 48), 255, np.uint8)]), mode="RGBA")
    palette = Image.fromarray(rgb(2)).convert("P")
    floats = rgb(3).astype(np.float32) / 255.0
    out = processor(images=[grey, rgba, palette])
    assert out["pixel_values"].shape == (1, 3, 3, 32, 32)
    from_float = processor(images=[floats, floats, floats])["pixel_values"]
    from_uint8 = processor(images=[rgb(3)] * 3)["pixel_values"]
    torch.testing.assert_close(from_float, from_uint8)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([rgb(0), rgb(1)], "got 2 views, expected 3"),
        ({"top": rgb(0)}, "unknown view name"),
        ([None, None, None], "every view is missing"),
        ([np.zeros((0, 10, 3), np.uint8), rgb(1), rgb(2)], "empty image"),
        ([Image.new("RGB", (0, 5)), rgb(1), rgb(2)], "empty image"),
        ([np.full((8, 8, 3), np.nan, np.float32), rgb(1), rgb(2)], "NaN"),
        ([rgb(0), "face.png", rgb(2)], "not an image"),
        ([], "non-empty list"),
    ],
)
def test_bad_images_get_clear_errors(processor, images, message):
    with pytest.raises(ValueError, match=message):
        processor(images=images)


def test_nothing_given(processor):
    with pytest.raises(ValueError, match="give images, text"):
        processor()


def test_text(processor):
    out = processor(text=["a happy face", "a face"])
    assert out["input_ids"].shape[0] == 2 and out["attention_mask"].shape == out["input_ids"].shape
    with pytest.raises(ValueError, match="text must be"):
        processor(text=[1, 2])


def test_tensor_fast_path_matches_pil_path_at_native_size(processor):
    # (B, V, H, W, 3)
    views = np.stack([np.stack([rgb(10 * b + v, (32, 32)) for v in range(3)]) for b in range(2)])
    fast = processor(images=views)
    slow = processor(images=[list(sample) for sample in views])
    torch.testing.assert_close(fast["pixel_values"], slow["pixel_values"], atol=1e-5, rtol=0)
    assert fast["view_mask"].all()
    # Channels-first and other sizes are accepted too.
    chw = processor.normalize_views(torch.from_numpy(views).permute(0, 1, 4, 2, 3))
    torch.testing.assert_close(chw, fast["pixel_values"])
    normalized = processor.normalize_views(torch.zeros(1, 3, 64, 64, 3, dtype=torch.uint8))
    assert normalized.shape == (1, 3, 3, 32, 32)


def test_save_and_reload(tmp_path, processor):
    custom = tiny_processor(view_names=["frontal", "left", "right", "top"])
    custom.render_settings = {"mode": "depth", "size": 64, "frames": 8}
    custom.save_pretrained(tmp_path)
    loaded = AffectVLMProcessor.from_pretrained(tmp_path)
    assert loaded.view_names == ["frontal", "left", "right", "top"]
    assert loaded.render_settings == {"mode": "depth", "size": 64, "frames": 8}
    assert type(loaded.image_processor).__name__ == "CLIPImageProcessorPil"
    assert loaded.image_size == (32, 32)
    assert loaded.tokenizer("a face")["input_ids"] == custom.tokenizer("a face")["input_ids"]
