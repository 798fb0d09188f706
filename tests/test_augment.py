import pytest
import torch

from affectvlm.augment import MixedViewAugment, MixedViewAugmentConfig, MixedViewParams

OFF = {"flip_p": 0.0, "rotation_p": 0.0, "crop_p": 0.0, "view_dropout_p": 0.0}


def _batch(b=4, v=3, h=16, w=16, dtype=torch.float32, seed=0):
    """(B, V, 3, H, W) random views; uint8 in [0, 255] or float in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, v, 3, h, w), generator=g)
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


def _augment(**overrides) -> MixedViewAugment:
    return MixedViewAugment(MixedViewAugmentConfig(**overrides))


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_shapes_and_dtypes_preserved(dtype):
    x = _batch(dtype=dtype, h=12, w=20)
    out = _augment(flip_p=0.5, rotation_p=1.0, crop_p=1.0, view_dropout_p=0.3)(x)
    assert out.pixel_values.shape == x.shape and out.pixel_values.dtype == dtype
    assert out.view_mask.shape == (4, 3) and out.view_mask.dtype == torch.bool
    assert not torch.equal(out.pixel_values, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_identity_when_disabled_or_probabilities_zero(dtype):
    x = _batch(dtype=dtype)
    mask = torch.tensor([[True, False, True]] * 4)
    for augment in (_augment(enabled=False), _augment(**OFF)):
        out = augment(x, mask)
        assert torch.equal(out.pixel_values, x) and torch.equal(out.view_mask, mask)
    augment = _augment(rotation_p=1.0).eval()
    assert torch.equal(augment(x).pixel_values, x)
    # Rotation by exactly 0 degrees and a full-size crop also leave the pixels untouched.
    out = _augment(
        **{
            **OFF,
            "rotation_p": 1.0,
            "max_rotation_deg": 0.0,
            "crop_p": 1.0,
            "crop_scale": (1.0, 1.0),
            "crop_ratio": (1.0, 1.0),
        }
    )(x)
    assert torch.equal(out.pixel_values, x)


def test_seeded_determinism():
    x = _batch()
    cfg = {"flip_p": 0.5, "rotation_p": 0.7, "crop_p": 0.7, "view_dropout_p": 0.2}
    a, b = _augment(seed=3, **cfg)(x), _augment(seed=3, **cfg)(x)
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.view_mask, b.view_mask)
    c = _augment(seed=4, **cfg)(x)
    assert not torch.equal(a.pixel_values, c.pixel_values)
    # An explicit generator gives the same stream as the module's own with that seed.
    d = _augment(seed=99, **cfg)(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.pixel_values, d.pixel_values)
    # Consecutive calls draw new parameters.
    augment = _augment(seed=3, **cfg)
    assert not torch.equal(augment(x).pixel_values, augment(x).pixel_values)


def test_resume_from_state_dict():
    augment = _augment(rotation_p=1.0, crop_p=1.0)
    x = _batch()
    augment(x)
    state = augment.state_dict()
    expected = augment(x).pixel_values
    resumed = _augment(rotation_p=1.0, crop_p=1.0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(x).pixel_values, expected)


def test_parameters_are_independent_across_views():
    augment = _augment(flip_p=0.0, rotation_p=1.0, crop_p=1.0)
    params = augment.draw_params(64)
    assert (params.angle[:, 0] != params.angle[:, 1]).all() and (
        params.angle[:, 1] != params.angle[:, 2]
    ).all()
    # Crop sides clamped at the view's size can tie; the rest differ between views.
    for p in (params.crop_size[..., 0], params.crop_center[..., 1]):
        assert (p[:, 0] != p[:, 1]).float().mean() > 0.8 and (p[:, 1] != p[:, 2]).float().mean() > 0.8
    assert params.angle.abs().max() <= 10.0 and params.angle.std() > 3.0
    area = params.crop_size.prod(-1)
    assert area.min() >= 0.8 * 0.999 and params.crop_size.max() <= 1.0
    # The same image in all three slots comes out differently in each.
    x = _batch(b=2, v=1).expand(2, 3, 3, 16, 16).contiguous()
    out = augment(x).pixel_values
    assert not torch.equal(out[:, 0], out[:, 1]) and not torch.equal(out[:, 1], out[:, 2])


def test_swap_flip_keeps_left_right_mirror_relation():
    x = _batch(b=6)
    x[:, 1] = x[:, 2].flip(-1)  # left is the mirror image of right
    mask = torch.tensor([[True, True, False]] * 6)
    out = _augment(**{**OFF, "flip_p": 1.0, "flip_mode": "swap"})(x, mask)
    y = out.pixel_values
    assert torch.equal(y[:, 1], y[:, 2].flip(-1))  # still mirror images of each other
    assert torch.equal(y[:, 2], x[:, 1].flip(-1)) and torch.equal(y[:, 1], x[:, 2].flip(-1))
    assert torch.equal(y[:, 0], x[:, 0].flip(-1))
    assert out.view_mask.tolist() == [[True, False, True]] * 6  # availability moved with the views
    # With p = 0.5 some samples are flipped and some not, and the relation holds for all of them.
    y = _augment(**{**OFF, "flip_p": 0.5})(x).pixel_values
    assert torch.equal(y[:, 1], y[:, 2].flip(-1))
    flipped = [torch.equal(y[i, 0], x[i, 0].flip(-1)) for i in range(6)]
    assert 0 < sum(flipped) < 6
    # A mirror-symmetric scan (symmetric frontal, left = mirrored right) is its own mirror image.
    x[:, 0] = (x[:, 0] + x[:, 0].flip(-1)) / 2
    assert torch.equal(_augment(**{**OFF, "flip_p": 1.0})(x).pixel_values, x)


def test_frontal_flip_mode_flips_only_the_frontal_view():
    x = _batch(b=8)
    y = _augment(**{**OFF, "flip_p": 1.0, "flip_mode": "frontal"})(x).pixel_values
    assert torch.equal(y[:, 0], x[:, 0].flip(-1))
    assert torch.equal(y[:, 1:], x[:, 1:])
    params = _augment(flip_p=0.5, flip_mode="frontal").draw_params(200)
    assert not params.flip[:, 1:].any() and 0.3 < params.flip[:, 0].float().mean() < 0.7


def test_view_dropout_never_drops_every_view():
    x = _batch(b=32)
    mask = torch.ones(32, 3, dtype=torch.bool)
    mask[:8, 0] = False
    mask[8:12] = False  # samples with no view at all stay as they are
    mask[8:12, 2] = True
    mask[12, :] = False
    out = _augment(**{**OFF, "view_dropout_p": 1.0})(x, mask)
    kept = out.view_mask.sum(1)
    assert (kept[mask.any(1)] == 1).all() and kept[12] == 0
    assert not (out.view_mask & ~mask).any()  # only available views are kept
    dropped = mask & ~out.view_mask
    assert (out.pixel_values[dropped] == 0).all()
    assert torch.equal(out.pixel_values[out.view_mask], x[out.view_mask])
    # The view kept is random, not always the first available one.
    assert len({tuple(row) for row in out.view_mask[13:].tolist()}) > 1
    out = _augment(**{**OFF, "view_dropout_p": 0.5})(x)
    assert out.view_mask.any(1).all() and not out.view_mask.all()


def test_geometry_rotation_and_crop():
    augment = _augment()
    x = _batch(b=1, v=3, h=8, w=8)
    zeros = torch.zeros(1, 3)

    def params(angle, size=1.0, center=0.0):
        return MixedViewParams(
            torch.arange(3)[None],
            zeros.bool(),
            torch.full((1, 3), float(angle)),
            torch.full((1, 3, 2), float(size)),
            torch.full((1, 3, 2), float(center)),
            zeros.bool(),
        )

    y = augment.apply(x, params(90)).pixel_values
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    wide = _batch(b=1, v=3, h=6, w=10)
    y = augment.apply(wide, params(180)).pixel_values
    torch.testing.assert_close(y, wide.flip(-1, -2), atol=1e-5, rtol=0)
    # A half-size crop at the centre magnifies the middle of the view 2x.
    ramp = torch.arange(8.0).expand(1, 3, 3, 8, 8).contiguous()
    y = augment.apply(ramp, params(0, size=0.5)).pixel_values
    torch.testing.assert_close(y[..., 0, :], torch.linspace(1.75, 5.25, 8).expand(1, 3, 3, 8))


def test_uint8_and_float_batches_agree():
    x = _batch(dtype=torch.uint8)
    cfg = {"rotation_p": 1.0, "crop_p": 1.0, "flip_p": 0.5}
    a = _augment(**cfg)(x).pixel_values
    b = _augment(**cfg)(x.float()).pixel_values
    assert (a.float() - b.round().clamp(0, 255)).abs().max() <= 1


def test_config_validation_and_round_trip():
    cfg = MixedViewAugmentConfig(flip_mode="frontal", crop_scale=(0.5, 0.9))
    assert MixedViewAugmentConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        {"flip_p": 1.5},
        {"flip_mode": "mirror"},
        {"crop_scale": (0.9, 0.5)},
        {"crop_ratio": (0.0, 1.0)},
        {"mirror_pairs": (("left", "top"),)},
        {"view_names": ("a", "a")},
        {"max_rotation_deg": -1},
        {"padding_mode": "wrap"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            MixedViewAugmentConfig(**kwargs)
    with pytest.raises(ValueError):
        MixedViewAugmentConfig.from_dict({"flip_probability": 0.5})
    with pytest.raises(ValueError, match="views"):
        _augment()(torch.zeros(2, 2, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    x = _batch()
    cfg = {"rotation_p": 1.0, "crop_p": 1.0, "flip_p": 0.5, "view_dropout_p": 0.3}
    cpu = _augment(**cfg)(x)
    gpu = _augment(**cfg)(x.cuda(), torch.ones(4, 3, dtype=torch.bool, device="cuda"))
    assert gpu.pixel_values.is_cuda and torch.equal(gpu.view_mask.cpu(), cpu.view_mask)
    torch.testing.assert_close(gpu.pixel_values.cpu(), cpu.pixel_values, atol=1e-4, rtol=0)


def _mirrored_and_rolled_face(mode: str, roll_deg: float):
    """(the frontal view, the mirrored face's, the face turned `roll_deg` about the view axis), (1, 1, 3, H, W)
    floats in [0, 1], each rendered in `mode`."""
    import numpy as np

    from affectvlm.scan import Scan, normalize_scan, render_views
    from affectvlm.testing import face_mesh

    face = normalize_scan(face_mesh().replace(uv=None))
    a = np.deg2rad(roll_deg)
    roll = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], np.float32)
    scans = [
        face,
        Scan(face.vertices * np.array([-1, 1, 1], np.float32), face.faces[:, ::-1].copy()),
        Scan(face.vertices @ roll.T, face.faces),
    ]
    views = render_views(scans, views=[(0.0, 0.0)], size=96, mode=mode)
    views = torch.from_numpy(views).permute(0, 1, 4, 2, 3)
    return [v[None].float() / 255 for v in views]


def _params(flip: bool, angle: float) -> MixedViewParams:
    return MixedViewParams(
        torch.zeros(1, 1, dtype=torch.long), torch.tensor([[flip]]), torch.tensor([[angle]]),
        torch.ones(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.bool),
    )


@pytest.mark.parametrize("mode", ["normal_map", "shade_normal"])
def test_flipped_and_turned_normals_are_the_mirrored_and_turned_face(mode):
    """A view that draws the normal, flipped or turned by the augmentation, is the view of the mirrored or
    turned face: its normal's x negated, its (x, y) turned with the pixels. Moving the pixels alone is not."""
    from affectvlm.scan import NORMAL_CHANNELS

    view, mirrored, rolled = _mirrored_and_rolled_face(mode, 8.0)
    channels = list(NORMAL_CHANNELS[mode])
    one_view = {"view_names": ("frontal",), "mirror_pairs": ()}
    aware = MixedViewAugment(MixedViewAugmentConfig(**one_view, normal_channels=channels))
    blind = MixedViewAugment(MixedViewAugmentConfig(**one_view))

    def error(augment, params, truth):
        out = augment.apply(view, params).pixel_values
        both = (out.amax(2) > 0.05) & (truth.amax(2) > 0.05)  # surface in both, away from the rim
        return (out - truth)[:, :, channels].abs().permute(0, 1, 3, 4, 2)[both].mean().item()

    assert error(aware, _params(True, 0.0), mirrored) < 0.01
    assert error(blind, _params(True, 0.0), mirrored) > 0.05
    assert error(aware, _params(False, 8.0), rolled) < 0.01
    assert error(blind, _params(False, 8.0), rolled) > 1.5 * error(aware, _params(False, 8.0), rolled)
    uint8 = aware.apply((view * 255).round().to(torch.uint8), _params(True, 0.0)).pixel_values.float() / 255
    assert (uint8 - aware.apply(view, _params(True, 0.0)).pixel_values).abs().max() < 1e-5


def test_grey_views_are_the_grey_render():
    """grey_p: a shade_normal view shown grey is exactly the "normal" (grey) render of the same face, the kind of
    image a user brings to the three-image door; grey_p needs the shade in channel 0."""
    from affectvlm.scan import Scan, normalize_scan, render_views
    from affectvlm.testing import face_mesh

    face = normalize_scan(face_mesh("anger").replace(uv=None))
    scans = [face, Scan(face.vertices)]
    both, grey = (torch.from_numpy(render_views(scans, size=48, mode=m)) for m in ("shade_normal", "normal"))
    both, grey = (v.permute(0, 1, 4, 2, 3) for v in (both, grey))
    augment = _augment(**{**OFF, "normal_channels": (1, 2), "grey_p": 1.0})
    assert torch.equal(augment(both).pixel_values, grey)
    half = _augment(**{**OFF, "normal_channels": (1, 2), "grey_p": 0.5, "seed": 3})(both.repeat(4, 1, 1, 1, 1))
    pairs = zip(half.pixel_values.flatten(0, 1), grey.repeat(4, 1, 1, 1, 1).flatten(0, 1))
    shown_grey = [torch.equal(v, g) for v, g in pairs]
    assert 0 < sum(shown_grey) < len(shown_grey)
    with pytest.raises(ValueError, match="grey_p"):
        MixedViewAugmentConfig(grey_p=0.2)
    with pytest.raises(ValueError, match="grey_p"):
        MixedViewAugmentConfig(grey_p=0.2, normal_channels=(0, 1))
