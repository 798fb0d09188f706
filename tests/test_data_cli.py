import json

from affectvlm.data.__main__ import main
from affectvlm.data.folds import load_folds


def test_help_explains_each_command(capsys):
    commands = ("synth", "prepare", "folds", "sfm", "sfm-convert")
    for argv in ([], *([name, "--help"] for name in commands)):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        assert code in (0, 2)
    out = capsys.readouterr().out
    assert "SynthFER-3D" in out and "resum" in out.lower() and "--val-fraction" in out
    assert "non-commercial" in out and "sfm_3448.npz" in out


def test_synth_then_folds(tmp_path, sfm_dir, capsys):
    root = tmp_path / "bos"
    assert main(["synth", "--out", str(root), "--layout", "bosphorus", "--subjects", "3", "--preset", "easy",
                 "--set", "noise=0.1", "--sfm-dir", str(sfm_dir)]) == 0  # fmt: skip
    assert len(list(root.glob("bs*/*.bnt"))) == 3 * 7
    out = str(tmp_path / "f.json")
    assert main(["folds", "--dataset", "bosphorus", "--root", str(root), "--k", "3", "--out", out]) == 0
    folds = load_folds(tmp_path / "f.json")
    assert len(folds) == 3 and sorted(s for f in folds for s in f.test) == ["bs000", "bs001", "bs002"]
    assert json.loads((tmp_path / "f.json").read_text())["info"]["dataset"] == "bosphorus"
    assert "wrote 3 folds" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    missing, out = str(tmp_path / "missing"), str(tmp_path / "f.json")
    assert main(["folds", "--dataset", "bu3dfe", "--root", missing, "--out", out]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["folds", "--out", "x.json"]) == 2  # needs a source
    assert "needs --cache" in capsys.readouterr().err


def test_registers_under_the_package_cli():
    import argparse

    from affectvlm.data.__main__ import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "folds", "--out", "x.json", "--k", "5"])
    assert args.k == 5 and callable(args.func)
    assert parser.parse_args(["data"]).func(None) == 2
