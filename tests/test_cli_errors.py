"""Every option of `python -m affectvlm predict` / `render` and every name `from_pretrained` takes has a defined
answer: a one-line `error: ...` and exit 2 at the command line, an `InputError` in the library, before any scan
is scored."""

import zipfile

import numpy as np
import pytest
import torch

from affectvlm import AffectVLMProcessor
from affectvlm import predictor as predictor_module
from affectvlm.__main__ import main
from affectvlm.predictor import (
    DEMO_CHECKPOINT,
    AffectVLMPredictor,
    InputError,
    resolve_device,
    resolve_dtype,
    shipped_models,
)
from affectvlm.scan import write_obj, write_ply
from affectvlm.testing import face_mesh


@pytest.fixture
def scan_file(tmp_path):
    path = tmp_path / "face.ply"
    write_ply(path, face_mesh())
    return path


@pytest.fixture
def no_scoring(monkeypatch):
    """Loading a model fails the test: the checks under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(AffectVLMPredictor, "from_pretrained", classmethod(refuse))


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert all(word in err for word in words), err
    return err


# -- 1: model names ----------------------------------------------------------------------------------------------


def test_unknown_model_names_say_what_there_is(tmp_path):
    shipped = ", ".join(shipped_models())
    with pytest.raises(InputError, match=f"no such folder or shipped model 'affectvlm-foo'; shipped: {shipped}"):
        AffectVLMPredictor.from_pretrained("affectvlm-foo")
    with pytest.raises(InputError, match="no such folder '/nonexistent/dir'"):
        AffectVLMPredictor.from_pretrained("/nonexistent/dir")
    for blank in ("", "  "):
        with pytest.raises(InputError, match="no model named"):
            AffectVLMPredictor.from_pretrained(blank)
    with pytest.raises(InputError, match="without a saved model"):
        AffectVLMPredictor.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="could not load a model from"):
        AffectVLMPredictor.from_pretrained(str(tmp_path))


def test_a_hub_id_is_tried_on_the_hub_and_its_failure_is_one_line():
    with pytest.raises(InputError) as err:
        AffectVLMPredictor.from_pretrained("nobody-here-xyz/no-such-affectvlm")
    assert str(err.value).startswith("could not load 'nobody-here-xyz/no-such-affectvlm' from the Hugging Face Hub")
    assert "\n" not in str(err.value)


def test_a_hub_out_of_reach_is_read_from_the_cache_or_fails_at_once(monkeypatch):
    """Not in offline mode, with no network: one request, then the local cache only (huggingface_hub would retry
    the dead connection for about 28 s before failing); a model not in the cache fails in one line saying why."""
    import time

    import huggingface_hub
    from huggingface_hub import constants

    class NoNetwork:
        def head(self, *args, **kwargs):
            raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: NoNetwork())
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        AffectVLMPredictor.from_pretrained("nobody-here-xyz/no-such-affectvlm")
    assert time.perf_counter() - start < 10  # no retries
    assert str(err.value) == (
        "could not load 'nobody-here-xyz/no-such-affectvlm' from the Hugging Face Hub: the Hub is out of reach "
        "(no network?) and the model is not in the local cache"
    )
    # a model in the cache loads as it is, with no request but the one
    seen = {}
    original = predictor_module.AffectVLMModel.from_pretrained

    def recorded(source, **kwargs):
        seen.update(kwargs)
        return original(DEMO_CHECKPOINT)

    monkeypatch.setattr(predictor_module.AffectVLMModel, "from_pretrained", recorded)
    processor = AffectVLMProcessor.from_pretrained(DEMO_CHECKPOINT)
    monkeypatch.setattr(predictor_module.AffectVLMProcessor, "from_pretrained", lambda source, **kwargs: processor)
    cached = AffectVLMPredictor.from_pretrained("someone/cached-affectvlm", prompt_features=False)
    assert seen == {"local_files_only": True}
    happy = DEMO_CHECKPOINT.parents[1] / "examples" / "scan_subject0_happiness.ply"
    assert cached(scan=happy, labels=["anger", "happiness", "sadness"]).label == "happiness"


def test_cli_unknown_model_is_one_line(scan_file, capsys):
    assert main(["predict", str(scan_file), "--model", "affectvlm-foo"]) == 2
    one_line_error(capsys, "no such folder or shipped model 'affectvlm-foo'")


# -- 2: devices and dtypes ---------------------------------------------------------------------------------------


def test_devices_are_checked(monkeypatch, scan_file, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(InputError, match="CUDA is not available on this machine"):
            AffectVLMPredictor.from_pretrained(device=device)
    for device in ("gpu", "meta", ""):
        with pytest.raises(InputError, match="unknown device"):
            resolve_device(device)
    assert resolve_device(None) == resolve_device(" CPU ") == torch.device("cpu")
    assert main(["predict", str(scan_file), "--device", "cuda"]) == 2
    one_line_error(capsys, "CUDA is not available", "--device cpu")
    assert main(["render", str(scan_file), "--out", "x", "--device", "gpu"]) == 2
    one_line_error(capsys, "unknown device 'gpu'")


def test_dtypes_by_name():
    cpu = torch.device("cpu")
    assert resolve_dtype("bfloat16", cpu) is resolve_dtype("bf16", cpu) is torch.bfloat16
    with pytest.warns(UserWarning, match="float16 on a CPU is emulated and slow"):
        assert resolve_dtype("torch.float16", cpu) is resolve_dtype("fp16", cpu) is torch.float16
    assert resolve_dtype("float32", cpu) is resolve_dtype(torch.float32, cpu) is torch.float32
    for bad in ("int8", torch.int8, 5, "double-ish"):
        with pytest.raises(InputError, match="unknown dtype .*; use one of bf16, bfloat16"):
            resolve_dtype(bad, cpu)


def test_a_dtype_name_loads():
    predictor = AffectVLMPredictor.from_pretrained(dtype="bfloat16", device="cpu")
    assert predictor.model.dtype == torch.bfloat16


# -- 3, 4: output paths and --explain-hide, checked before any scoring -------------------------------------------


@pytest.mark.parametrize(
    "out, words",
    [
        ("newdir/x.glb", ["cannot write", "no folder newdir"]),
        ("somefile/x.glb", ["cannot write", "no folder somefile"]),
        ("ok.txt", ["--explain writes .glb files", "ok.glb"]),
        ("adir.glb", ["cannot write", "is a folder"]),
    ],
)
def test_explain_paths_are_checked_first(out, words, scan_file, tmp_path, monkeypatch, capsys, no_scoring):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somefile").write_text("")
    (tmp_path / "adir.glb").mkdir()
    assert main(["predict", str(scan_file), "--explain", out]) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "ok.txt").exists()


def test_csv_to_a_folder_is_refused_before_scoring(tmp_path, capsys, no_scoring):
    (tmp_path / "scans").mkdir()
    assert main(["predict", str(tmp_path / "scans"), "--csv", str(tmp_path)]) == 2
    one_line_error(capsys, "cannot write", "is a folder")


def test_explain_options_need_explain_and_a_scan(scan_file, tmp_path, capsys, no_scoring):
    assert main(["predict", str(scan_file), "--explain-hide", "surface"]) == 2
    one_line_error(capsys, "--explain-hide needs --explain")
    assert main(["predict", str(tmp_path), "--explain", str(tmp_path / "x.glb")]) == 2
    one_line_error(capsys, "--explain paints a scan")
    assert main(["predict", str(tmp_path), "--csv", str(tmp_path / "o.csv"), "--explain", str(tmp_path / "x.glb")]) == 2
    one_line_error(capsys, "does not go with --csv")


# -- 5: render ---------------------------------------------------------------------------------------------------


def test_render_bad_output_and_input_exit_2(scan_file, tmp_path, capsys):
    (tmp_path / "existing").write_text("")
    assert main(["render", str(scan_file), "--out", str(tmp_path / "existing")]) == 2
    one_line_error(capsys, "is a file; give a folder")
    assert main(["render", str(scan_file), "--out", str(tmp_path / "existing" / "sub")]) == 2
    one_line_error(capsys, "cannot be made")
    (tmp_path / "bad.ply").write_text("garbage")
    assert main(["render", str(tmp_path / "bad.ply"), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "bad.ply")
    assert main(["render", str(scan_file), "--size", "16", "--point-radius", "20", "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "--point-radius 20 is more than --size 16")


@pytest.mark.parametrize(
    "option", [["--size", "0"], ["--size", "100000"], ["--size", "x"], ["--extent", "0"], ["--crop-radius", "-5"],
               ["--point-radius", "nan"]],
)  # fmt: skip
def test_render_numbers_are_checked_by_argparse(option, scan_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", str(scan_file), "--out", str(tmp_path / "o"), *option])
    assert exit_.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_render_a_zip_sequence(tmp_path, capsys):
    archive = tmp_path / "seq.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, w in enumerate(np.linspace(0, 1, 4)):
            write_obj(tmp_path / "frame.obj", face_mesh("surprise", w))
            z.write(tmp_path / "frame.obj", f"seq/{i:03d}.obj")
    assert main(["render", str(archive), "--size", "48", "--out", str(tmp_path / "dyn")]) == 0
    assert sorted(p.name for p in (tmp_path / "dyn").iterdir()) == [
        "seq_dynamic_frontal.png", "seq_dynamic_left.png", "seq_dynamic_right.png"
    ]  # fmt: skip
    assert "4 frames -> 3 dynamic images" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "missing.zip: no such file")
    assert main(["render", str(archive), str(tmp_path / "frame.obj"), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "give it alone")
