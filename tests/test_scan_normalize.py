"""normalize_scan: nose tip, crop, frame, units, alignment."""

import numpy as np
import pytest

from affectvlm.scan import ScanError, normalize_scan
from affectvlm.scan.normalize import find_nose_tip
from affectvlm.testing import face_mesh


@pytest.fixture(scope="module")
def face():
    return face_mesh().replace(uv=None)


def test_nose_tip_at_origin_and_unit_frame(face):
    n = normalize_scan(face)
    tip = face.vertices[np.argmax(face.vertices[:, 2])]
    # the nose tip maps to the origin and is still the frontmost point
    assert np.abs(n.vertices[np.argmax(n.vertices[:, 2])]).max() < 1e-6
    r = np.linalg.norm(n.vertices, axis=1)
    assert 0.98 < np.percentile(r, 99) < 1.02 and r.max() < 1.05
    # cropping at 90 mm keeps exactly the vertices within 90 mm of the tip
    assert n.num_vertices == int((np.linalg.norm(face.vertices - tip, axis=1) <= 90).sum())
    assert n.faces.max() < n.num_vertices


def test_size_and_units_invariance(face):
    a = normalize_scan(face)
    big = normalize_scan(face.replace(vertices=face.vertices * 1.2), crop_radius=None)
    ref = normalize_scan(face, crop_radius=None)
    np.testing.assert_allclose(big.vertices, ref.vertices, atol=1e-5)  # a larger face fills the frame alike
    metres = normalize_scan(face.replace(vertices=face.vertices / 1000.0))
    np.testing.assert_allclose(metres.vertices, a.vertices, atol=1e-5)
    with pytest.raises(ValueError, match="units"):
        normalize_scan(face, units="inch")


def test_nose_tip_ignores_spikes(face):
    v = face.vertices.copy()
    spikes = v[:: len(v) // 5][:5].copy()
    spikes[:, 2] = v[:, 2].max() + 20.0  # isolated points in front of the nose tip, spread over the face
    tip = find_nose_tip(np.concatenate([v, spikes]))
    np.testing.assert_allclose(tip, v[np.argmax(v[:, 2])])


def test_landmark_and_mm_output(face):
    idx = int(np.argmax(face.vertices[:, 1]))  # any vertex can be declared the centre
    n = normalize_scan(face, landmark=idx, crop_radius=None, fit=False)
    np.testing.assert_allclose(n.vertices, face.vertices - face.vertices[idx], atol=1e-4)
    n2 = normalize_scan(face, landmark=face.vertices[idx], crop_radius=None, fit=False)
    np.testing.assert_allclose(n2.vertices, n.vertices)


def test_pca_alignment_undoes_a_head_turn(face):
    a = np.radians(15)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32)
    turned = face.replace(vertices=face.vertices @ rot.T)
    ref = normalize_scan(face, align=True, crop_radius=None)
    got = normalize_scan(turned, align=True, crop_radius=None)
    # same shape, same frame (up to where the nose tip lands on the turned surface)
    err = np.abs((got.vertices - got.vertices.mean(0)) - (ref.vertices - ref.vertices.mean(0))).max()
    assert err < 0.05


def test_nonfinite_and_empty(face):
    v = face.vertices.copy()
    v[:10] = np.nan
    n = normalize_scan(face.replace(vertices=v))
    assert np.isfinite(n.vertices).all()
    with pytest.raises(ScanError, match="NaN"):
        normalize_scan(face.replace(vertices=np.full_like(v, np.nan)))
    with pytest.raises(ScanError, match="no vertex within"):
        normalize_scan(face, landmark=np.array([1e4, 0, 0]))


def test_a_scan_at_one_point_is_refused_naming_its_file(tmp_path):
    from affectvlm.scan import load_scan

    (tmp_path / "same.xyz").write_text("1 2 3\n" * 100)
    with pytest.raises(ScanError, match=r"no extent.*\(same\.xyz\)"):
        normalize_scan(load_scan(tmp_path / "same.xyz"))
