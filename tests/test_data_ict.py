"""The ICT FaceKit (`affectvlm.data.ict`): the loader on the real file in ../shared/ict (skipped without it),
the converter on a small fake clone of the kit written here (no network), and the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from affectvlm.data import ict as ict_module
from affectvlm.data.__main__ import main
from affectvlm.data.ict import ICT_NPZ, ICTError, convert_ict, find_ict, load_ict

ROOT = Path(__file__).resolve().parents[1]
ICT_HOW_TO = (
    "these tests need the ICT FaceKit (MIT licence): `git clone --depth 1 "
    "https://github.com/ICT-VGL/ICT-FaceKit`, `python -m affectvlm.data ict-convert ICT-FaceKit --out DIR`, "
    "`export AFFECTVLM_ICT_DIR=DIR` "
    "(docs/data.md, 'The ICT FaceKit')"
)


def ict_folder() -> Path:
    """$AFFECTVLM_ICT_DIR when set (even to a folder that does not exist), else ../shared/ict beside the
    checkout (as conftest's `sfm_folder` for the Surrey Face Model)."""
    configured = os.environ.get("AFFECTVLM_ICT_DIR")
    return Path(configured).expanduser() if configured else ROOT.parent / "shared" / "ict"


@pytest.fixture(scope="module")
def ict():
    folder = ict_folder()
    if not (folder / ICT_NPZ).is_file():
        pytest.skip(f"no {ICT_NPZ} in {folder}: {ICT_HOW_TO}")
    return load_ict(folder)


# --- a fake clone of the kit ----------------------------------------------------------------------------

# Twelve vertices: the face is 0-5, head and neck 6-7, 8-9 stand for the mouth socket (dropped), the
# eyeballs 10-11 (kept as 8-9).
SMALL_REGIONS = {"face": (0, 6), "headneck": (6, 8), "eyeballs": (10, 12)}
SMALL_POLYGONS = [
    [0, 1, 4, 3],  # a face quad: (0, 1, 4), (0, 4, 3)
    [3, 4, 7, 6],  # starts in the face, reaches the neck: stays with the face
    [6, 7, 9, 8],  # touches the mouth socket on both halves: dropped
    [5, 6, 8],  # a triangle with a dropped corner
    [7, 5, 2, 1, 0],  # a head/neck pentagon, fanned from its first corner
    [10, 11, 4, 5],  # an eyeball quad
    [2, 8, 5, 1],  # half of it kept: (2, 5, 1)
]
SMALL_TRIANGLES = [[0, 1, 4], [0, 4, 3], [3, 4, 7], [3, 7, 6], [2, 5, 1], [7, 5, 2], [7, 2, 1], [7, 1, 0],
                   [8, 9, 4], [8, 4, 5]]  # fmt: skip
SMALL_REGION_TRIANGLES = [[0, 5], [5, 8], [8, 10]]
EXPRESSIONS = ["jawOpen", "mouthSmile_L", "mouthSmile_R"]


def _write_obj(path: Path, vertices: np.ndarray, polygons: list[list[int]]) -> None:
    """An OBJ as the kit writes them: a comment header, a material, uv corners (``f v/vt``), 1-based."""
    lines = ["# ICT FaceKit (fake)", "mtllib ICTFaceModelMaterial.mtl"]
    lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in vertices.tolist()]
    lines += ["vt 0.5 0.5", "usemtl face"]
    lines += ["f " + " ".join(f"{v + 1}/1" for v in polygon) for polygon in polygons]
    path.write_text("\n".join(lines) + "\n")


def write_fake_facekit(
    root: Path,
    num_vertices: int = 12,
    polygons: list[list[int]] = SMALL_POLYGONS,
    landmarks: list[int] | None = (0, 1, 2, 3, 4, 5, 6, 7, 10, 11),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A clone of the kit in `root` (FaceXModel/ and LICENSE): the neutral mesh, two identities, the three
    EXPRESSIONS named in vertex_indices.json (landmarks cycled to 68, or no landmark list), plus files the
    converter must not read. Returns the meshes written, in cm: name -> (num_vertices, 3) float64."""
    rng = np.random.default_rng(seed)
    folder = root / "FaceXModel"
    folder.mkdir(parents=True)
    meshes = {"generic_neutral_mesh": rng.normal(0, 5, (num_vertices, 3))}
    for name in ("identity000", "identity001", *EXPRESSIONS, "identity003", "PupilDilate_L"):
        meshes[name] = meshes["generic_neutral_mesh"] + rng.normal(0, 0.5, (num_vertices, 3))
    for name, vertices in meshes.items():
        _write_obj(folder / f"{name}.obj", vertices, polygons)
    config = {"expressions": EXPRESSIONS, "fitting_expressions": EXPRESSIONS, "incompatibilities": []}
    if landmarks is not None:
        config["idx_to_landmark_verts"] = [landmarks[i % len(landmarks)] for i in range(68)]
    (folder / "vertex_indices.json").write_text(json.dumps(config))
    (root / "LICENSE").write_text(
        "MIT License\n\nCopyright (c) 2020 USC Institute for Creative Technologies\n"
    )
    return meshes


def converted_small(tmp_path: Path, **kwargs) -> tuple[Path, dict[str, np.ndarray]]:
    meshes = write_fake_facekit(tmp_path / "ICT-FaceKit", **kwargs)
    return convert_ict(tmp_path / "ICT-FaceKit", tmp_path / "ict", regions=SMALL_REGIONS), meshes


# --- the real model -------------------------------------------------------------------------------------


def test_real_model_is_in_millimetres(ict):
    assert ict.source == (ict_folder() / ICT_NPZ).resolve()
    assert ict.neutral.shape == (14388, 3) and ict.identity.shape == (100, 14388, 3)
    assert ict.expressions.shape == (53, 14388, 3) and len(ict.expression_names) == 53
    assert {a.dtype for a in (ict.neutral, ict.identity, ict.expressions)} == {np.dtype(np.float32)}
    assert ict.triangles.dtype == np.int64 and 0 <= ict.triangles.min() < ict.triangles.max() < 14388
    face = ict.neutral[ict.regions["face"].vertices]
    assert 120 < np.ptp(face[:, 0]) < 250  # mm: a face is 12-25 cm wide
    assert list(ict.regions) == ["face", "headneck", "eyeballs"] and len(ict.landmarks68) == 68
    assert "MIT" in ict.summary() and "millimetres" in ict.summary()


def test_nose_tip_has_the_largest_z(ict):
    tip = ict.nose_tip_index
    face = ict.regions["face"].vertices
    assert face.start <= tip < face.stop
    assert ict.neutral[tip, 2] == ict.neutral[face, 2].max() == ict.neutral[:, 2].max()
    assert abs(ict.neutral[tip, 0]) < 2  # on the midline


def test_jaw_open_opens_the_mouth(ict):
    rest, open_ = ict.face(), ict.face(expression_weights={"jawOpen": 1.0})
    moved = open_ - rest
    lower_lip, upper_lip, chin = ict.landmarks68[[57, 51, 8]]  # Multi-PIE: lower and upper lip middle, chin
    assert moved[lower_lip, 1] < -10 and moved[chin, 1] < -10  # mm, downwards
    assert abs(moved[upper_lip, 1]) < 5 and np.abs(moved[ict.nose_tip_index]).max() < 0.5
    vector = ict.expression_vector({"jawOpen": 1.0})
    assert vector.sum() == 1 and np.array_equal(ict.face(expression_weights=vector), open_)
    half = ict.face(expression_weights={"jawOpen": 0.5})
    np.testing.assert_allclose(half - rest, moved / 2, atol=1e-4)


def test_identity_weights_change_the_shape(ict):
    w = ict.random_identity(np.random.default_rng(0))
    assert w.shape == (100,) and w.dtype == np.float32 and 0.5 < w.std() < 1.5
    assert np.array_equal(w, ict.random_identity(0))  # a seed or a generator
    face = ict.regions["face"].vertices
    shapes = [ict.face(identity_weights=v)[face] for v in (w, ict.random_identity(1))]
    for shape in shapes:
        rms = np.sqrt(((shape - ict.neutral[face]) ** 2).sum(1).mean())
        assert 2 < rms < 40  # mm
    assert np.abs(shapes[0] - shapes[1]).max() > 5
    assert np.array_equal(ict.face(identity_weights=np.zeros(100)), ict.neutral)
    first = ict.face(identity_weights=w[:10])  # the first modes only
    np.testing.assert_allclose(first, ict.face(identity_weights=np.r_[w[:10], np.zeros(90)]), atol=1e-4)


def test_triangles_leave_the_eyeballs_out_unless_asked(ict):
    skin = ict.triangles_for()
    assert skin.max() < ict.regions["eyeballs"].vertices.start
    assert len(skin) + len(ict.triangles_for(["eyeballs"])) == len(ict.triangles)
    assert np.array_equal(ict.triangles_for(["face", "headneck", "eyeballs"]), ict.triangles)


def test_model_is_shared_and_read_only(ict):
    assert load_ict(ict_folder()) is ict
    with pytest.raises(ValueError):
        ict.neutral[0, 0] = 1.0
    out = ict.face()
    out[0] += 1.0  # a copy
    assert not np.array_equal(ict.face()[0], out[0])


def test_bad_weights_and_regions_say_what_is_known(ict):
    with pytest.raises(ValueError, match="unknown ICT expression.*smile.*jawOpen"):
        ict.face(expression_weights={"smile": 1.0})
    with pytest.raises(ValueError, match="k <= 100"):
        ict.face(identity_weights=np.zeros(101))
    with pytest.raises(ValueError, match=r"expected \(53,\)"):
        ict.face(expression_weights=np.zeros(3))
    with pytest.raises(ValueError, match="unknown ICT region.*teeth"):
        ict.triangles_for(["teeth"])


def test_converter_reproduces_the_shared_file_from_a_real_clone(tmp_path):
    """With $AFFECTVLM_ICT_FACEKIT pointing at a clone of the kit (420 MB, not in CI): every array of the
    converted file is byte for byte that of ../shared/ict (whose README gives the commit)."""
    clone, reference = os.environ.get("AFFECTVLM_ICT_FACEKIT"), ict_folder() / ICT_NPZ
    if not clone or not reference.is_file():
        pytest.skip(f"set AFFECTVLM_ICT_FACEKIT to a clone of the kit, and {ICT_HOW_TO}")
    npz = convert_ict(clone, tmp_path)
    with zipfile.ZipFile(npz) as ours, zipfile.ZipFile(reference) as theirs:
        assert ours.namelist() == theirs.namelist()
        for name in theirs.namelist():
            assert ours.read(name) == theirs.read(name), name


# --- finding it -----------------------------------------------------------------------------------------


def test_env_folder_without_the_file_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AFFECTVLM_ICT_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ICTError, match="AFFECTVLM_ICT_DIR.*ict-convert") as error:
        load_ict()
    assert isinstance(error.value, ValueError)
    assert main(["ict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ICT FaceKit model not found") and err.count("\n") == 1


def test_search_order_env_then_beside_the_checkout_then_cache(monkeypatch, tmp_path):
    npz, _ = converted_small(tmp_path)
    shared, cache = tmp_path / "shared" / "ict", tmp_path / "cache"
    monkeypatch.setattr(ict_module, "_SHARED_DIR", shared)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("AFFECTVLM_ICT_DIR", raising=False)
    looked = f"no {ICT_NPZ} in {shared} (beside the checkout); {cache / 'affectvlm' / 'ict'} (user cache)"
    with pytest.raises(ICTError, match=re.escape(looked)):
        find_ict()
    in_cache = convert_ict(tmp_path / "ICT-FaceKit", regions=SMALL_REGIONS)  # default: the user cache
    assert in_cache == cache / "affectvlm" / "ict" / ICT_NPZ and find_ict() == in_cache
    assert (in_cache.parent / "LICENSE").is_file()
    shared.mkdir(parents=True)
    (shared / ICT_NPZ).write_bytes(npz.read_bytes())
    assert find_ict() == shared / ICT_NPZ
    monkeypatch.setenv("AFFECTVLM_ICT_DIR", str(npz.parent))
    assert find_ict() == npz and find_ict(in_cache) == in_cache and find_ict(in_cache.parent) == in_cache


# --- the converter, on a fake clone ---------------------------------------------------------------------


def test_converter_round_trip_reproduces_the_objs_in_mm(tmp_path):
    npz, meshes = converted_small(tmp_path)
    model = load_ict(npz)
    kept = np.r_[0:8, 10:12]
    neutral = meshes["generic_neutral_mesh"][kept] * 10  # cm -> mm
    np.testing.assert_allclose(model.neutral, neutral, rtol=1e-6)
    for i, name in enumerate(("identity000", "identity001")):  # identity003 comes after a gap: not read
        weights = np.eye(2, dtype=np.float32)[i]
        np.testing.assert_allclose(model.face(identity_weights=weights), meshes[name][kept] * 10, atol=0.02)
    assert model.expression_names == EXPRESSIONS  # PupilDilate_L.obj is not in vertex_indices.json
    for name in EXPRESSIONS:
        np.testing.assert_allclose(
            model.face(expression_weights={name: 1}), meshes[name][kept] * 10, atol=0.02
        )
    assert model.triangles.tolist() == SMALL_TRIANGLES
    assert [(r.triangles.start, r.triangles.stop) for r in model.regions.values()] == list(
        map(tuple, SMALL_REGION_TRIANGLES)
    )
    assert [(r.vertices.start, r.vertices.stop) for r in model.regions.values()] == [(0, 6), (6, 8), (8, 10)]
    assert model.landmarks68[:10].tolist() == list(range(10)) and len(model.landmarks68) == 68
    assert model.licence_file == npz.parent / "LICENSE" and model.stored_units == "cm" and model.to_mm == 10


def test_converted_file_follows_the_shared_layout(tmp_path):
    npz, _ = converted_small(tmp_path)
    with np.load(npz) as d:
        dtypes = {key: d[key].dtype.str for key in d.files}
        assert d["src_index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]
        assert str(d["units"]) == "cm" and float(d["to_mm"]) == 10 and d["identity_scale"].tolist() == [1, 1]
        assert d["identity_rms"].shape == (2,) and (d["identity_rms"] > 0).all()
    assert list(dtypes) == ["neutral", "identity", "identity_scale", "identity_rms", "expression_names",
                            "expressions", "triangles", "region_names", "region_ranges", "region_triangles",
                            "src_index", "landmarks68", "units", "to_mm"]  # fmt: skip
    assert dtypes["identity"] == dtypes["expressions"] == "<f2" and dtypes["neutral"] == "<f4"
    assert dtypes["triangles"] == dtypes["src_index"] == dtypes["landmarks68"] == "<i4"


def test_converter_without_a_landmark_list_leaves_them_out(tmp_path):
    npz, _ = converted_small(tmp_path, landmarks=None)
    with np.load(npz) as d:
        assert "landmarks68" not in d.files
    model = load_ict(npz)
    assert model.landmarks68 is None and "landmarks: none in this file" in model.summary()


def test_a_file_converted_again_is_read_again(tmp_path):
    npz, _ = converted_small(tmp_path)
    before = load_ict(npz)
    other = write_fake_facekit(tmp_path / "other", seed=1)
    assert convert_ict(tmp_path / "other", npz.parent, regions=SMALL_REGIONS) == npz
    after = load_ict(npz)
    assert after is not before and after is load_ict(npz.parent)
    np.testing.assert_allclose(after.neutral[:6], other["generic_neutral_mesh"][:6] * 10, rtol=1e-6)


def test_converter_says_what_is_wrong(tmp_path):
    with pytest.raises(ICTError, match="lacks generic_neutral_mesh.obj, vertex_indices.json.*git clone"):
        convert_ict(tmp_path, tmp_path / "out")
    write_fake_facekit(tmp_path / "kit")
    (tmp_path / "kit" / "FaceXModel" / "mouthSmile_R.obj").unlink()
    with pytest.raises(ICTError, match="mouthSmile_R.obj is missing"):
        convert_ict(tmp_path / "kit" / "FaceXModel", tmp_path / "out", regions=SMALL_REGIONS)
    _write_obj(tmp_path / "kit" / "FaceXModel" / "mouthSmile_R.obj", np.zeros((11, 3)), SMALL_POLYGONS[:1])
    with pytest.raises(ICTError, match="mouthSmile_R.obj has 11 vertices, the neutral mesh 12"):
        convert_ict(tmp_path / "kit", tmp_path / "out", regions=SMALL_REGIONS)
    with pytest.raises(ICTError, match="outside the mesh's 12 vertices"):
        convert_ict(tmp_path / "kit", tmp_path / "out")  # the real kit's ranges
    assert not (tmp_path / "out" / ICT_NPZ).exists()


# --- the command line -----------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m affectvlm.data ARGS` in a new process (each costs the package's few-second import)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "affectvlm.data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # --help
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_help_explains_the_ict_commands(tmp_path, capsys):
    convert = _cli("ict-convert", "--help", cwd=tmp_path)
    assert convert.returncode == 0, convert.stderr
    for words in ("ICT-VGL/ICT-FaceKit", "FaceXModel", "centimetres", "LICENSE", "--out", "user cache"):
        assert words in convert.stdout, words
    code, out, _ = _main(["--help"], capsys)
    assert code == 0 and "ict-convert" in out and "AFFECTVLM_ICT_DIR" in out and "MIT" in out
    code, out, _ = _main(["ict", "--help"], capsys)
    assert code == 0 and "--info" in out and "../shared/ict" in out and "user cache" in out


def test_cli_converts_a_clone_with_the_kits_ranges(tmp_path, capsys):
    """The kit's own vertex ranges (face 0..9408, head/neck 9409..11247, eyeballs 21451..24590) on a fake
    clone with the kit's vertex count and a few polygons at the region borders."""
    polygons = [[9407, 9408, 9409, 9410], [11245, 11246, 11247, 11248], [21451, 21452, 21453, 21450]]
    write_fake_facekit(tmp_path / "ICT-FaceKit", num_vertices=26719, polygons=polygons, landmarks=[0, 9408])
    out = tmp_path / "ict"
    run = _cli("ict-convert", "ICT-FaceKit", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"AFFECTVLM_ICT_DIR={out}" in run.stdout and (out / "LICENSE").is_file()
    code, info, _ = _main(["ict", "--info", "--dir", str(out)], capsys)
    assert code == 0
    expected = (
        "vertices: 14388 (face 9409, headneck 1839, eyeballs 3140)",
        "triangles: 4 (face 2, headneck 1, eyeballs 1)",
        "identity modes: 2",
        "expression shapes: 3 (jawOpen, mouthSmile_L, mouthSmile_R)",
        "landmarks: 68",
        "MIT",
    )
    for line in expected:
        assert line in info, (line, info)
    code, _, err = _main(["ict-convert", str(tmp_path / "nowhere"), "--out", str(out)], capsys)
    assert code == 1 and err.startswith("error: ") and "git clone" in err and err.count("\n") == 1
