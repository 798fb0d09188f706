"""`python -m affectvlm render`: PNG views of a scan, dynamic images of a folder or list of frames."""

import argparse

import numpy as np
import pytest
from PIL import Image

from affectvlm.__main__ import main
from affectvlm.scan import write_obj, write_ply
from affectvlm.scan.cli import collect_frames, parse_views
from affectvlm.testing import face_mesh


def test_parse_views():
    assert parse_views("0,20,-20:10") == [(0.0, 0.0), (20.0, 0.0), (-20.0, 10.0)]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_views("left")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_views(",")


def test_render_one_scan(tmp_path, capsys):
    write_ply(tmp_path / "face.ply", face_mesh())
    assert main(["render", str(tmp_path / "face.ply"), "--size", "64", "--out", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["face_frontal.png", "face_left.png", "face_right.png"]
    img = np.asarray(Image.open(tmp_path / "out" / "face_frontal.png"))
    assert img.shape == (64, 64, 3) and img[32, 32].max() > 100 and img[0, 0].max() == 0
    assert "face_left.png" in capsys.readouterr().out
    assert (
        main(
            [
                "render",
                str(tmp_path / "face.ply"),
                "--views=-45,0:30",
                "--mode",
                "depth",
                "--size",
                "32",
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == [
        "face_yaw+0_pitch+30.png",
        "face_yaw-45_pitch+0.png",
    ]


def test_render_sequence_folder_and_list(tmp_path):
    seq = tmp_path / "Surprise"
    seq.mkdir()
    for i, w in enumerate(np.linspace(0, 1, 6)):
        write_obj(seq / f"{i:03d}.obj", face_mesh("surprise", w))
    (seq / "notes.txt").write_text("not a frame")
    assert [p.name for p in collect_frames(seq)][:3] == ["000.obj", "001.obj", "002.obj"]
    assert main(["render", str(seq), "--size", "48", "--out", str(tmp_path / "dyn")]) == 0
    names = sorted(p.name for p in (tmp_path / "dyn").iterdir())
    assert names == [
        "Surprise_dynamic_frontal.png",
        "Surprise_dynamic_left.png",
        "Surprise_dynamic_right.png",
    ]
    frames = [str(p) for p in collect_frames(seq)]
    assert main(["render", *frames[:4], "--size", "48", "--out", str(tmp_path / "dyn2")]) == 0
    assert len(list((tmp_path / "dyn2").iterdir())) == 3


def test_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 99999999999\nend_header\n")
    assert main(["render", str(tmp_path / "bad.ply"), "--out", str(tmp_path / "o")]) == 2
    assert "cap" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["render", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_bench_script_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "render.py"
    spec = importlib.util.spec_from_file_location("bench_render", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # the bench reads the mean face and triangles of sfm_3448.npz: a stand-in face is enough to run it
    face = face_mesh()
    np.savez(tmp_path / "sfm_3448.npz", mean=face.vertices, triangles=face.faces)
    argv = ["--sfm-dir", str(tmp_path), "--levels", "0", "--repeats", "2", "--warmup", "1", "--size", "32"]
    assert bench.main(argv) == 0
    assert f"{face.num_faces:>8} {face.num_vertices:>9}" in capsys.readouterr().out
