"""Scoring a folder or zip of scans into a table (`affectvlm.batch`, `predict --csv`): the answers, not shapes.

Every door gives the same label for the same scan: the library scoring a file alone, `score_batch` on a folder
and on a zip, and the CLI's CSV. Where the library names the expression of a committed example (held-out faces,
the truth in the file name) the CSV names it too. A bad file costs its own row, never the batch; a source that
cannot be used (too many scans, a zip bomb, no scan) is refused with an InputError that names no server folder.
"""

import csv
import io
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from affectvlm.__main__ import main
from affectvlm.batch import iter_scan_files, score_batch, write_csv
from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor, InputError, InputLimits
from bench import hostile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
EXAMPLE_SCANS = sorted(EXAMPLES.glob("scan_*.ply"))
# in the folder, the last example sits in a subfolder: rows name files by their path relative to the source
IN_FOLDER = {p.name: (f"sub/{p.name}" if p == EXAMPLE_SCANS[-1] else p.name) for p in EXAMPLE_SCANS}

pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")


def truth_of(name: str) -> str:
    """The expression named in an example's file name (scan_subject0_happiness.ply -> happiness)."""
    return next(e for e in EMOTIONS if e in Path(name).stem)


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


@pytest.fixture(scope="module")
def alone(predictor):
    """file name -> the library's Prediction for that example scored alone."""
    return {p.name: predictor(scan=p, labels=EMOTIONS) for p in EXAMPLE_SCANS}


@pytest.fixture(scope="module")
def scans_dir(tmp_path_factory) -> Path:
    """The examples (one in a subfolder), a corrupt scan, and files that are not scans (skipped)."""
    folder = tmp_path_factory.mktemp("batch") / "scans"
    (folder / "sub").mkdir(parents=True)
    for path in EXAMPLE_SCANS:
        shutil.copy(path, folder / IN_FOLDER[path.name])
    (folder / "bad.obj").write_bytes(bytes(range(256)) * 40)  # garbage named like a scan
    (folder / "README.md").write_text("not a scan\n")
    (folder / "sub" / "photo.png").write_bytes(b"\x89PNG not a scan either")
    return folder


@pytest.fixture(scope="module")
def batch(predictor, scans_dir):
    """(rows, progress calls) of the folder, scored once for the module."""
    calls = []
    rows = score_batch(predictor, scans_dir, labels=EMOTIONS, progress=lambda *a: calls.append(a))
    return rows, calls


def by_file(rows) -> dict[str, dict]:
    return {row["file"]: row for row in rows}


def as_text(rows) -> list[dict[str, str]]:
    """Rows as a CSV reader gives them back."""
    return [{k: str(v) for k, v in row.items()} for row in rows]


def read_csv(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def assert_library_answers(rows, alone, name_of):
    """Each example's row gives the label and scores of the library scoring the file alone."""
    got = by_file(rows)
    for name, result in alone.items():
        row = got[name_of[name]]
        assert row["error"] == "" and row["label"] == result.label, (row, result.scores())
        assert {e: row[e] for e in EMOTIONS} == pytest.approx(result.scores(), abs=1e-4)
        assert row["notes"] == "; ".join(result.notes)


# -- one row per scan, the library's answer ---------------------------------------------------------------------


def test_a_folder_gives_one_row_per_scan_with_the_library_answer(batch, alone):
    rows, calls = batch
    expected = sorted(["bad.obj", *IN_FOLDER.values()])  # README.md and photo.png are not scans
    assert [row["file"] for row in rows] == expected
    assert all(list(row) == ["file", "label", *EMOTIONS, "notes", "error"] for row in rows)
    assert_library_answers(rows, alone, IN_FOLDER)
    assert calls == [(i, len(expected), name) for i, name in enumerate(expected, 1)]


def test_the_csv_names_the_expression_wherever_the_library_does(batch, alone, tmp_path):
    right = [name for name, result in alone.items() if result.label == truth_of(name)]
    assert right, {name: r.scores() for name, r in alone.items()}  # else the check below says nothing
    write_csv(batch[0], tmp_path / "out.csv")
    columns, table = read_csv(tmp_path / "out.csv")
    assert columns == ["file", "label", *EMOTIONS, "notes", "error"]
    assert table == as_text(batch[0])
    labels = {row["file"]: row["label"] for row in table}
    assert {name: labels[IN_FOLDER[name]] for name in right} == {name: truth_of(name) for name in right}


def test_a_zip_of_scans_gives_the_library_answer(predictor, alone, tmp_path):
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in EXAMPLE_SCANS:
            z.write(path, f"faces/{path.name}")  # a folder inside the zip: extracted flat, rows name the file
        z.writestr("faces/notes.md", "not a scan")
    rows = score_batch(predictor, archive, labels=EMOTIONS)
    assert [row["file"] for row in rows] == [p.name for p in EXAMPLE_SCANS]
    assert_library_answers(rows, alone, {name: name for name in alone})
    write_csv(rows, tmp_path / "out.csv")
    assert read_csv(tmp_path / "out.csv") == (["file", "label", *EMOTIONS, "notes", "error"], as_text(rows))


def test_a_corrupt_file_costs_its_row_not_the_batch(batch, scans_dir):
    rows = by_file(batch[0])
    bad = rows["bad.obj"]
    assert "bad.obj" in bad["error"] and str(scans_dir.parent) not in bad["error"]
    assert bad["label"] == "" and all(bad[e] == "" for e in EMOTIONS)
    assert sum(bool(row["error"]) for row in rows.values()) == 1  # every example still scored


def test_labels_default_to_the_models_own_and_may_not_clash_with_columns(predictor, tmp_path):
    (tmp_path / "empty.ply").write_bytes(b"")  # refused before anything is rendered: a cheap batch
    rows = score_batch(predictor, tmp_path)
    assert list(rows[0]) == ["file", "label", *predictor.default_labels, "notes", "error"]
    assert "empty" in rows[0]["error"] and str(tmp_path) not in rows[0]["error"]
    with pytest.raises(InputError, match="'file'"):
        score_batch(predictor, tmp_path, labels=["happy", "file"])
    out = io.StringIO(newline="")
    write_csv(rows, out)
    assert out.getvalue().splitlines()[0] == ",".join(["file", "label", *predictor.default_labels, "notes", "error"])


# -- the CLI ----------------------------------------------------------------------------------------------------


def test_cli_csv_rows_match_score_batch(batch, scans_dir, tmp_path):
    out = tmp_path / "out.csv"
    run = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(scans_dir), "--csv", str(out), "--labels", *EMOTIONS],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]  # the batch ran, though one scan could not be scored
    assert f"{len(EXAMPLE_SCANS)} scored, 1 error" in run.stdout and str(out) in run.stdout
    columns, table = read_csv(out)
    assert columns == ["file", "label", *EMOTIONS, "notes", "error"]
    assert table == as_text(batch[0])


def test_cli_refuses_a_batch_that_cannot_run_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert main(["predict", str(tmp_path / "nothing"), "--csv", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "no scan files" in err and str(tmp_path) not in err
    assert not (tmp_path / "out.csv").exists()
    assert main(["predict", str(EXAMPLE_SCANS[0]), "--csv", str(tmp_path / "out.csv")]) == 2
    assert "folder or .zip" in capsys.readouterr().err


# -- sources refused whole --------------------------------------------------------------------------------------


def test_more_scans_than_the_cap_are_refused(predictor, tmp_path):
    (tmp_path / "many").mkdir()
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"{i}.obj", "v 0 0 0\n")
            (tmp_path / "many" / f"{i}.obj").write_text("v 0 0 0\n")
    small = InputLimits(max_zip_entries=2)
    (tmp_path / "work").mkdir()
    for source in (archive, tmp_path / "many"):
        with pytest.raises(InputError, match="limit") as err:
            list(iter_scan_files(source, small, tmp_path / "work"))
        assert str(tmp_path) not in str(err.value) and source.name in str(err.value)
    capped = AffectVLMPredictor(predictor.model, predictor.processor, limits=small)
    with pytest.raises(InputError, match="limit"):
        score_batch(capped, archive, labels=EMOTIONS)
    assert len(list(iter_scan_files(archive, InputLimits(max_zip_entries=3), tmp_path))) == 3


def test_a_zip_bomb_is_refused_quickly(predictor, tmp_path):
    bomb = hostile.zip_bomb(tmp_path / "bomb.zip", megabytes=64)  # one frame of 64 MB of zeros in ~64 kB
    start = time.perf_counter()
    with pytest.raises(InputError, match="zip bomb") as err:
        score_batch(predictor, bomb, labels=EMOTIONS)
    assert time.perf_counter() - start < 5 and str(tmp_path) not in str(err.value)


def test_sources_without_scans_are_refused(predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("README.md", "no scans here")
    for source in (tmp_path / "empty", archive, tmp_path / "missing", EXAMPLE_SCANS[0]):
        with pytest.raises(InputError) as err:
            score_batch(predictor, source, labels=EMOTIONS)
        assert source.name in str(err.value) and str(source.parent) not in str(err.value)


def test_a_zip_with_one_name_in_two_folders_is_refused(predictor, tmp_path):
    """Zips are extracted flat (`extract_frames`): two scans of the same name cannot both be kept."""
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(EXAMPLE_SCANS[0], "a/face.ply")
        z.write(EXAMPLE_SCANS[1], "b/face.ply")
    with pytest.raises(InputError, match="share a name"):
        score_batch(predictor, archive, labels=EMOTIONS)
