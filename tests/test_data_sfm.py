"""The Surrey Face Model: the cereal reader, the npz conversion, locating and downloading (all offline).

Tests marked by the `sfm_dir` fixture use the real model and are skipped without it; the conversion and the
download route are tested on small fake eos files (`affectvlm.testing.fake_sfm_files`).
"""

import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest

from affectvlm.data import sfm as sfm_module
from affectvlm.data.__main__ import main
from affectvlm.data.sfm import (
    EXPRESSION_NAMES,
    SFM_FILES,
    SFM_NPZ,
    SYMMETRY_FILE,
    SFMError,
    convert_sfm,
    find_sfm_dir,
    load_sfm,
    read_cereal_blendshapes,
    read_cereal_shape_model,
    symmetry_pairs,
)
from affectvlm.testing import fake_sfm_files

MODEL_KEYS = ("mean", "basis", "eigenvalues", "triangles", "texcoords", "expressions", "symmetry")


def write_files(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def serve(monkeypatch, files: dict[str, bytes]) -> None:
    """urllib.request.urlopen answers each file's eos URL with its bytes, and any other URL as offline."""

    def urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.URLError("no network")
        return io.BytesIO(files[name])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


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
    if not (sfm_dir / SYMMETRY_FILE).is_file():
        pytest.skip(f"{SYMMETRY_FILE} not in the model folder (it is optional)")
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
    serve(monkeypatch, dict.fromkeys(SFM_FILES, b"not the model"))
    with pytest.raises(SFMError, match="sha256"):
        sfm_module.download_sfm(tmp_path)
    assert not (tmp_path / "sfm_shape_3448.bin").exists()


def test_documented_download_route_gives_the_folder_the_tests_use(monkeypatch, tmp_path, capsys):
    """`python -m affectvlm.data sfm --download --dir DIR` (docs/data.md) leaves the originals, the symmetry
    file and sfm_3448.npz in DIR, which is then a valid AFFECTVLM_SFM_DIR."""
    files = fake_sfm_files()
    serve(monkeypatch, files)
    checked = {name: (url, hashlib.sha256(files[name]).hexdigest()) for name, (url, _) in SFM_FILES.items()}
    monkeypatch.setattr(sfm_module, "SFM_FILES", checked)
    folder = tmp_path / "sfm"
    assert main(["sfm", "--download", "--dir", str(folder)]) == 0
    assert str(folder) in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == sorted([*files, SFM_NPZ])
    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(folder))
    assert find_sfm_dir() == folder
    from_npz, from_bin = load_sfm(), load_sfm(write_files(tmp_path / "originals", files))
    for key in MODEL_KEYS:
        assert np.array_equal(getattr(from_npz, key), getattr(from_bin, key)), key


def test_convert_command_writes_the_npz_beside_the_originals(tmp_path, capsys):
    src = write_files(tmp_path / "download", fake_sfm_files(seed=1))
    out = tmp_path / "sfm"
    assert main(["sfm-convert", str(src), "--out", str(out)]) == 0
    assert f"AFFECTVLM_SFM_DIR={out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([*fake_sfm_files(), SFM_NPZ])
    with np.load(out / SFM_NPZ) as npz:
        assert npz["triangles"].dtype == np.int32 and npz["basis"].flags.f_contiguous
        assert tuple(npz["expression_names"]) == EXPRESSION_NAMES
    a, b = load_sfm(out), load_sfm(src)
    for key in MODEL_KEYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.symmetry.tolist()[:2] == [1, 0]


def test_convert_says_what_is_missing(tmp_path, capsys):
    (tmp_path / "sfm_shape_3448.bin").write_bytes(fake_sfm_files()["sfm_shape_3448.bin"])
    assert main(["sfm-convert", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "lacks expression_blendshapes_3448.bin" in err and "docs/data.md" in err


def test_convert_reproduces_the_reference_npz(tmp_path, sfm_dir):
    if not all((sfm_dir / name).is_file() for name in SFM_FILES):
        pytest.skip("original .bin files not in the model folder")
    npz = convert_sfm(sfm_dir, tmp_path)
    with zipfile.ZipFile(npz) as ours, zipfile.ZipFile(sfm_dir / SFM_NPZ) as reference:
        assert ours.namelist() == reference.namelist()
        for name in reference.namelist():  # each .npy member, header (dtype, order) and data, byte for byte
            assert ours.read(name) == reference.read(name), name


def test_identity_draw(sfm_dir):
    model = load_sfm(sfm_dir)
    assert np.allclose(model.identity(np.zeros(63)), model.mean)
    batch = model.identity(np.random.default_rng(0).standard_normal((2, 63)))
    assert batch.shape == (2, model.num_vertices, 3)
