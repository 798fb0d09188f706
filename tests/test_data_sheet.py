"""The SynthFER-3D contact sheet (`python -m affectvlm.data sheet`): a PNG with one row per label and face model,
three views each, and a realism row."""

import pytest
from PIL import Image

from affectvlm.data.__main__ import main
from affectvlm.data.sheet import LABEL_WIDTH, SHEET_LABELS, TITLE_HEIGHT


@pytest.fixture(scope="module")
def ict_dir():
    from test_data_ict import ICT_HOW_TO, ict_folder

    from affectvlm.data.ict import ICT_NPZ

    if not (ict_folder() / ICT_NPZ).is_file():
        pytest.skip(f"no {ICT_NPZ} in {ict_folder()}: {ICT_HOW_TO}")
    return ict_folder()


def test_sheet_command_writes_the_grid(tmp_path, sfm_dir, ict_dir, capsys):
    out = tmp_path / "sheet.png"
    args = ["sheet", "--out", str(out), "--size", "24", "--sfm-dir", str(sfm_dir), "--ict-dir", str(ict_dir)]
    assert main(args) == 0 and str(out) in capsys.readouterr().out
    rows = 2 * len(SHEET_LABELS) + 1  # both face models (the default), then realism
    with Image.open(out) as image:
        assert image.size == (LABEL_WIDTH + 3 * 24, TITLE_HEIGHT + rows * 24)
        strip = image.convert("L").crop((LABEL_WIDTH, TITLE_HEIGHT, image.width, image.height))
        assert strip.getextrema()[1] > 100  # the faces are there, not a black page


def test_sheet_of_one_face_model(tmp_path, sfm_dir):
    out = tmp_path / "sfm.png"
    assert (
        main(["sheet", "--out", str(out), "--size", "16", "--face-model", "sfm", "--sfm-dir", str(sfm_dir)])
        == 0
    )
    with Image.open(out) as image:
        assert image.size == (LABEL_WIDTH + 3 * 16, TITLE_HEIGHT + (len(SHEET_LABELS) + 1) * 16)


def test_sheet_of_sfm_faces_with_the_kits_shapes_reads_the_given_kit(tmp_path, sfm_dir, ict_dir, monkeypatch):
    """--sfm-binding transfer on an SFM-only sheet takes the ICT FaceKit from --ict-dir for every row."""
    monkeypatch.setenv("AFFECTVLM_ICT_DIR", str(tmp_path / "nowhere"))  # only --ict-dir can find it
    out = tmp_path / "transfer.png"
    args = ["sheet", "--out", str(out), "--size", "16", "--face-model", "sfm", "--expressions", "aus",
            "--sfm-binding", "transfer", "--sfm-dir", str(sfm_dir), "--ict-dir", str(ict_dir)]  # fmt: skip
    assert main(args) == 0
    with Image.open(out) as image:
        assert image.size == (LABEL_WIDTH + 3 * 16, TITLE_HEIGHT + (len(SHEET_LABELS) + 1) * 16)
