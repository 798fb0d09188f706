import urllib.error
import urllib.request

import numpy as np
import pytest

from affectvlm.data import sfm as sfm_module
from affectvlm.data.sfm import (
    EXPRESSION_NAMES,
    SFMError,
    find_sfm_dir,
    load_sfm,
    read_cereal_blendshapes,
    read_cereal_shape_model,
    symmetry_pairs,
)


def test_cereal_reader_matches_npz_exactly(sfm_dir):
    if not (sfm_dir / "sfm_shape_3448.bin").is_file():
        pytest.skip("original .bin files not in the model folder")
    ref = np.load(sfm_dir / "sfm_3448.npz")
    shape = read_cereal_shape_model(sfm_dir / "sfm_shape_3448.bin")
    for key, value in shape.items():
        assert np.array_equal(value, ref[key]), key
    names, expressions = read_cereal_blendshapes(sfm_dir / "expression_blendshapes_3448.bin")
    assert tuple(names) == EXPRESSION_NAMES
    assert np.array_equal(expressions, ref["expressions"])


def test_cereal_reader_rejects_truncated_file(tmp_path, sfm_dir):
    if not (sfm_dir / "sfm_shape_3448.bin").is_file():
        pytest.skip("original .bin files not in the model folder")
    bad = tmp_path / "sfm_shape_3448.bin"
    bad.write_bytes((sfm_dir / "sfm_shape_3448.bin").read_bytes()[:5000])
    with pytest.raises(SFMError, match="runs past the end|truncated"):
        read_cereal_shape_model(bad)


def test_load_from_bin_only_folder_equals_npz(tmp_path, sfm_dir):
    if not (sfm_dir / "sfm_shape_3448.bin").is_file():
        pytest.skip("original .bin files not in the model folder")
    for name in ("sfm_shape_3448.bin", "expression_blendshapes_3448.bin", "sfm_reference_symmetry.txt"):
        (tmp_path / name).write_bytes((sfm_dir / name).read_bytes())
    a, b = load_sfm(tmp_path), load_sfm(sfm_dir)
    for key in ("mean", "basis", "eigenvalues", "triangles", "texcoords", "expressions", "symmetry"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


def test_symmetry_file_with_trailing_comment(sfm_dir):
    model = load_sfm(sfm_dir)
    first = (sfm_dir / "sfm_reference_symmetry.txt").read_text().splitlines()[0]
    assert "#" in first  # the first line carries a comment after the index
    assert model.symmetry[0] == int(first.split("#")[0]) - 1
    assert model.symmetry.shape == (model.num_vertices,)
    # mirror pairs are left/right counterparts of the mean face
    mirrored = model.mean[model.symmetry] * np.array([-1, 1, 1])
    assert np.median(np.linalg.norm(mirrored - model.mean, axis=1)) < 1.5


def test_symmetry_without_file_mirrors():
    mean = np.array([[-10, 0, 0], [10, 0, 0], [0, 5, 1]], np.float32)
    assert symmetry_pairs(mean).tolist() == [1, 0, 2]


def test_env_and_explicit_dir(monkeypatch, tmp_path, sfm_dir):
    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    assert find_sfm_dir() == sfm_dir
    with pytest.raises(SFMError, match="holds neither"):
        find_sfm_dir(tmp_path)


def test_offline_download_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("AFFECTVLM_SFM_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SFMError, match="offline.*AFFECTVLM_SFM_DIR"):
        find_sfm_dir()
    with pytest.raises(SFMError, match="AFFECTVLM_SFM_DIR"):
        find_sfm_dir(download=False)


def test_download_checks_sha256(monkeypatch, tmp_path):
    class Fake:
        def __init__(self, *a, **k):
            self.data = [b"not the model"]

        def read(self, n=-1):
            return self.data.pop() if self.data else b""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", Fake)
    with pytest.raises(SFMError, match="sha256"):
        sfm_module.download_sfm(tmp_path)
    assert not (tmp_path / "sfm_shape_3448.bin").exists()


def test_identity_draw(sfm_dir):
    model = load_sfm(sfm_dir)
    assert np.allclose(model.identity(np.zeros(63)), model.mean)
    batch = model.identity(np.random.default_rng(0).standard_normal((2, 63)))
    assert batch.shape == (2, model.num_vertices, 3)
