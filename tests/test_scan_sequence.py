"""Approximate rank pooling: reference test vectors, pooling, dynamic images of a 4D sequence."""

import numpy as np
import pytest
import torch

from affectvlm.scan import (
    Scan,
    normalize_scan,
    normalize_sequence,
    rank_pool,
    rank_pool_weights,
    render_sequence,
    render_views,
)
from affectvlm.scan.sequence import to_uint8
from affectvlm.testing import face_mesh


def test_reference_vectors():
    np.testing.assert_allclose(rank_pool_weights(1), [1.0])
    np.testing.assert_allclose(rank_pool_weights(2), [-0.5, 0.5])
    np.testing.assert_allclose(rank_pool_weights(5), [-3.7, 0.3, 1.3, 1.3, 0.8], atol=1e-12)
    np.testing.assert_allclose(rank_pool_weights(10)[:5], [-12.219, -3.219, 0.281, 1.948, 2.698], atol=5e-4)
    for t in (2, 3, 17, 100):
        assert abs(rank_pool_weights(t).sum()) < 1e-9
    # the equivalent form fw(i) = sum_{t=i..T} (2t - T - 1) / t
    T = 7
    fw = [sum((2 * t - T - 1) / t for t in range(i, T + 1)) for i in range(1, T + 1)]
    np.testing.assert_allclose(rank_pool_weights(T), fw, atol=1e-12)
    with pytest.raises(ValueError):
        rank_pool_weights(0)


def test_rank_pool_numpy_and_torch():
    frames = np.random.default_rng(0).uniform(size=(5, 4, 6, 3))
    expected = sum(w * f for w, f in zip([-3.7, 0.3, 1.3, 1.3, 0.8], frames))
    np.testing.assert_allclose(rank_pool(frames), expected, atol=1e-12)
    got = rank_pool(torch.from_numpy(frames).float())
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(rank_pool(frames[:1]), frames[0])  # T = 1
    # a brightening sequence pools to a positive image
    ramp = np.arange(6, dtype=np.float64)[:, None] * np.ones((6, 3))
    assert (rank_pool(ramp) > 0).all()


def test_to_uint8():
    x = np.array([[-1.0, 0.0], [1.0, 3.0]])
    np.testing.assert_array_equal(to_uint8(x), [[0, 64], [128, 255]])
    np.testing.assert_array_equal(to_uint8(np.ones((2, 2))), 0)
    per = to_uint8(np.stack([x, 2 * x]), axis=(1, 2))
    np.testing.assert_array_equal(per[0], per[1])


@pytest.fixture(scope="module")
def smile():
    return [face_mesh("happiness", w).replace(uv=None) for w in np.linspace(0.0, 1.0, 6)]


def test_render_sequence_dynamic_images(smile):
    dyn = render_sequence(smile, size=64)
    assert dyn.shape == (3, 64, 64, 3) and dyn.dtype == np.uint8
    assert dyn.min() == 0 and dyn.max() == 255
    # chunking does not change the result
    np.testing.assert_array_equal(render_sequence(smile, size=64, chunk=4), dyn)
    # a static sequence has no motion: every frame the same gives a constant (all-zero) image
    still = render_sequence([smile[0]] * 4, size=32)
    assert still.max() == 0
    # T = 1: the rescaled frame itself
    one = render_sequence(smile[:1], size=32, mode="depth")
    frame = render_views(normalize_sequence(smile[:1]), size=32, mode="depth")[0].astype(float)
    np.testing.assert_array_equal(one, to_uint8(frame, axis=(1, 2, 3)))


def test_normalize_sequence_keeps_the_faces_motion_and_takes_out_the_heads(smile):
    frames = normalize_sequence(smile, crop_radius=None)
    assert len(frames) == len(smile)
    # the first frame is normalised as alone, and the later ones with its transform: the smile's motion survives
    np.testing.assert_allclose(
        frames[0].vertices, normalize_scan(smile[0], crop_radius=None).vertices, atol=1e-6
    )
    assert np.abs(frames[-1].vertices - frames[0].vertices).max() > 0.03
    # a head that moved by 5 mm towards the scanner (about 0.07 normalised) is put back: that shift is the head's
    moved = Scan(vertices=smile[-1].vertices + np.array([0, 0, 5], np.float32), faces=smile[-1].faces)
    still = normalize_sequence([smile[0], smile[-1]], crop_radius=None)[1]
    back = normalize_sequence([smile[0], moved], crop_radius=None)[1]
    assert np.abs(back.vertices - still.vertices).max() < 0.003


def test_still_frames_give_a_blank_dynamic_image():
    """Copies of one face (a still 'sequence') stay identical through normalisation, so there is no motion to
    pool: registering each copy onto the first once moved them by a thousandth of a radius, which rank pooling
    stretched into a full-contrast image that the model read as a confident expression."""
    from faces import EXAMPLES

    from affectvlm.scan import load_scan

    face = load_scan(EXAMPLES / "scan_ict_subject1_disgust.ply")
    copies = [face] + [Scan(vertices=face.vertices.copy(), faces=face.faces.copy()) for _ in range(4)]
    frames = normalize_sequence(copies)
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame.vertices, frames[0].vertices)
    dynamic = render_sequence(frames, size=64, normalize=False)
    assert not dynamic.any()


def _pool_with_gaps(frames: np.ndarray) -> np.ndarray:
    from affectvlm.scan.sequence import _ShortGaps, short_gap

    gaps = _ShortGaps(short_gap(len(frames)))
    for frame, w in zip(torch.from_numpy(frames), rank_pool_weights(len(frames))):
        gaps.add(frame, float(w))
    return gaps.pooled().numpy()


def test_a_hole_for_one_frame_pools_as_the_surface_either_side():
    """Of 8 frames (one view, 2 x 3 pixels, one channel), pixel (0, 0) misses the surface in frame 3 only: pooled as
    if it showed the mean of frames 2 and 4. Pixel (0, 1) misses frames 3 and 4 (longer than one in eight: an
    opening mouth), pixel (0, 2) frame 0 only (the first value seen fills it), pixel (1, 0) the last frame (the last
    value seen fills it), pixel (1, 1) every frame (background), pixel (1, 2) none."""
    rng = np.random.default_rng(0)
    frames = rng.uniform(30, 255, size=(8, 1, 2, 3, 1))
    filled = frames.copy()
    for (t, i, j), value in {
        (3, 0, 0): 0.5 * (frames[2, 0, 0, 0] + frames[4, 0, 0, 0]),
        (0, 0, 2): frames[1, 0, 0, 2],
        (7, 1, 0): frames[6, 0, 1, 0],
    }.items():
        frames[t, 0, i, j] = 0.0
        filled[t, 0, i, j] = value
    frames[3:5, 0, 0, 1] = filled[3:5, 0, 0, 1] = 0.0
    frames[:, 0, 1, 1] = filled[:, 0, 1, 1] = 0.0
    np.testing.assert_allclose(_pool_with_gaps(frames), rank_pool(filled), atol=1e-9)
    still = np.repeat(frames[:1], 8, axis=0)
    still[5, 0, 0, 0] = 0.0  # a hole in one frame of a face that does not move: nothing to pool
    np.testing.assert_allclose(_pool_with_gaps(still), 0.0, atol=1e-9)
