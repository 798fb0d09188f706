"""The Gradio app, used for real: launched on loopback and called through gradio_client."""

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from faces import example_face  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from affectvlm.predictor import DEMO_CHECKPOINT  # noqa: E402

# The served model's own labels (the default labels box): read from its config, without loading it.
DEFAULT_LABELS = json.loads((DEMO_CHECKPOINT / "config.json").read_text())["label_names"]


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    mean, faces, apex = example_face()

    def obj(path, vertices):
        with open(path, "w") as f:
            f.writelines(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in vertices)
            f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
        return path

    paths = {"scan": obj(folder / "face.obj", mean + apex)}
    from affectvlm.scan import load_scan

    smile = load_scan(Path(__file__).resolve().parents[1] / "examples" / "scan_subject0_happiness.ply")
    np.savetxt(folder / "smile.xyz", smile.vertices, fmt="%.3f")  # its vertices alone, as a point cloud
    paths["cloud"] = folder / "smile.xyz"
    with zipfile.ZipFile(folder / "sequence.zip", "w") as z:
        for t, w in enumerate(np.linspace(0, 1, 4)):
            z.write(obj(folder / f"{t:03d}.obj", mean + w * apex), f"{t:03d}.obj")
    paths["zip"] = folder / "sequence.zip"
    with zipfile.ZipFile(folder / "empty.zip", "w"):
        pass
    paths["empty_zip"] = folder / "empty.zip"
    rng = np.random.default_rng(0)
    for name in ("front", "left", "right"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{name}.png")
        paths[name] = folder / f"{name}.png"
    (folder / "corrupt.obj").write_text("v 1 2 three\nf 1 2 9\n")
    paths["corrupt"] = folder / "corrupt.obj"
    (folder / "notes.txt").write_text("not a scan")
    paths["wrong_ext"] = folder / "notes.txt"
    (folder / "huge.obj").write_bytes(b"v 0 0 0\n" * (3 * 1024**2 // 8))  # 3 MB > the 2 MB test limit
    paths["huge"] = folder / "huge.obj"
    Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16)).save(folder / "deep.png")  # mode I;16
    paths["deep"] = folder / "deep.png"
    (folder / "readme.png").write_text("# Not an image\n\nA text file named like a picture.\n")
    paths["not_image"] = folder / "readme.png"
    return paths


def scores_of(label_output):
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def test_every_event_has_an_api_name(app_module):
    names = {fn.api_name for fn in app_module.demo.fns.values() if fn.api_name}
    assert {"predict_views", "predict_scan", "predict_sequence", "explain_scan", "predict_batch"} <= names


def test_the_documented_api_is_the_buttons(client):
    """Each button owns its endpoint's name; the examples' and pickers' events stay out of the API."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {
        "/predict_views", "/predict_scan", "/predict_sequence", "/explain_scan", "/predict_batch"
    }  # fmt: skip


def test_views_endpoint(client, files):
    scores, contributions, gallery, status, aus, vocabulary = client.predict(
        handle_file(files["front"]),
        handle_file(files["left"]),
        handle_file(files["right"]),
        "happiness, sadness, heartbroken, a person in pain",
        api_name="/predict_views",
    )
    assert set(scores_of(scores)) == {"happiness", "sadness", "heartbroken", "a person in pain"}
    assert len(gallery) == 3
    assert "**heartbroken** → sadness" in vocabulary  # what the model makes of a never-trained word
    assert "**a person in pain** →" in vocabulary


def test_a_16_bit_image_is_read_and_noise_is_noted(client, files):
    """A 16-bit PNG was refused for its mode; it is read now (scaled to 8 bits), and this one, noise, is scored
    with the note that it does not look like a rendered view."""
    scores, _, gallery, status, *_ = client.predict(
        handle_file(files["deep"]), None, None, "", api_name="/predict_views"
    )
    assert set(scores_of(scores)) == set(DEFAULT_LABELS)
    assert "do not look like the views the model reads" in status


def test_views_endpoint_with_a_missing_view(client, files):
    scores, _, gallery, status, *_ = client.predict(
        handle_file(files["front"]), None, handle_file(files["right"]), "", api_name="/predict_views"
    )
    assert list(scores_of(scores)) and set(scores_of(scores)) == set(DEFAULT_LABELS)
    assert "missing view(s): left" in status


def test_scan_endpoint(client, files, app_module):
    import trimesh

    scores, contributions, gallery, status, preview, aus, vocabulary = client.predict(
        handle_file(files["scan"]),
        "anger, disgust, fear, happiness, sadness, surprise",
        api_name="/predict_scan",
    )
    assert sum(scores_of(scores).values()) == pytest.approx(1.0, abs=1e-3)
    assert len(gallery) == 3
    # The preview is the scan the model scored, normalised once: the predictor's own normalised scan, every vertex
    # (tests/test_app_browser.py checks that the browser draws it).
    path = preview["path"] if isinstance(preview, dict) else preview
    assert str(path).endswith(".glb")
    shown = trimesh.load(path, force="mesh")
    scored = app_module.PREDICTOR(scan=files["scan"], labels=["anger", "happiness"]).scan
    np.testing.assert_allclose(shown.vertices, scored.vertices, atol=1e-5)


def test_a_shape_that_is_no_face_is_said_to_be_so_above_the_answer(client, files, tmp_path, app_module):
    """A cylinder's point cloud passes the scan door's face tests; the model's face distance notes it, and the
    page says so first, above "Most likely", and the score panel's large headline says so in place of the top label
    (the scores beneath it are still the model's). A face gets neither."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(trimesh.creation.cylinder(60, 200, sections=64), 20000, seed=1)
    np.savetxt(tmp_path / "cylinder.xyz", points, fmt="%.3f")
    for path, doubted in ((tmp_path / "cylinder.xyz", True), (files["scan"], False)):
        scores, _, _, answer = client.predict(handle_file(path), "", api_name="/predict_scan")[:4]
        assert answer.startswith(app_module.NOT_A_FACE_HEADLINE) is doubted, answer
        assert ("this looks like none of the faces" in answer) is doubted and "Most likely" in answer
        top = max(scores["confidences"], key=lambda c: c["confidence"])["label"]
        assert scores["label"] == (app_module.NOT_A_FACE_LABEL if doubted else top), scores["label"]
        assert f"**{top}**" in answer  # the answer still names the model's top label


def test_the_scan_sequence_and_batch_endpoints_take_the_facing(client, files, tmp_path, app_module):
    """Which way the face looks in the file (the "Which way the face looks" box of the scan, sequence and batch
    tabs): the happy example looking along -x with +y up reads happiness with that facing (a choice of the box) and
    with it typed with its axis up; pointed the other way, the face is drawn from behind and the page says it may
    not be a face. The scan, sequence and batch endpoints take the facing after the labels; left out, it is found
    from the face (the examples, the clients written before it)."""
    from affectvlm.scan import load_scan, write_ply
    from affectvlm.scan.normalize import facing_turn

    smile = load_scan(Path(__file__).resolve().parents[1] / "examples" / "scan_subject0_happiness.ply")
    write_ply(tmp_path / "bust.ply", smile.replace(vertices=(smile.vertices @ facing_turn("-x")).astype("f4")))
    for facing, happy in (("-x", True), ("-x,+y", True), ("+x", False)):
        scores, _, _, answer = client.predict(
            handle_file(tmp_path / "bust.ply"), "", facing, api_name="/predict_scan"
        )[:4]
        doubted = answer.startswith(app_module.NOT_A_FACE_HEADLINE)
        assert (scores["label"] == "happiness") is happy and doubted is not happy, answer
    examples = Path(__file__).resolve().parents[1] / "examples"
    zipfile.ZipFile(examples / "sequence_subject3_happiness.zip").extractall(tmp_path / "frames")
    frames = []
    for frame in sorted((tmp_path / "frames").glob("*.ply")):
        scan = load_scan(frame)
        write_ply(frame, scan.replace(vertices=(scan.vertices @ facing_turn("-x")).astype("f4")))
        frames.append(handle_file(frame))
    for facing, happy in (("-x", True), ("+x", False)):
        scores, *_ = client.predict(frames, "", facing, api_name="/predict_sequence")
        assert (scores["label"] == "happiness") is happy, (facing, scores["label"])
    with zipfile.ZipFile(tmp_path / "busts.zip", "w") as z:
        z.write(tmp_path / "bust.ply", "bust.ply")
    for facing, happy in (("-x", True), ("+x", False)):
        table, _ = client.predict(handle_file(tmp_path / "busts.zip"), "", facing, api_name="/predict_batch")
        row = dict(zip(table["headers"], table["data"][0]))
        assert (row["label"] == "happiness") is happy and (row["notes"] == "") is happy, row
    with pytest.raises(Exception, match="facing must be"):
        client.predict(handle_file(tmp_path / "bust.ply"), "", "sideways", api_name="/predict_scan")


def test_a_point_clouds_preview_is_its_points(client, files, app_module):
    """A cloud has no triangles to draw: its preview was empty. It is now the normalised cloud's points, dark grey
    where the file gives no colours (white points vanish on the viewer's white; checked in a browser)."""
    import trimesh

    scores, *_, preview, _, _ = client.predict(handle_file(files["cloud"]), "", api_name="/predict_scan")
    assert max(scores_of(scores), key=scores_of(scores).get) == "happiness"
    path = preview["path"] if isinstance(preview, dict) else preview
    shown = trimesh.load(path)
    points = shown.geometry[next(iter(shown.geometry))] if isinstance(shown, trimesh.Scene) else shown
    scored = app_module.PREDICTOR(scan=files["cloud"], labels=["anger", "happiness"]).scan
    assert scored.is_point_cloud
    np.testing.assert_allclose(points.vertices, scored.vertices, atol=1e-5)
    assert np.asarray(points.colors)[:, :3].max() < 128


def test_sequence_endpoint(client, files):
    scores, _, gallery, status, *_ = client.predict(
        [handle_file(files["zip"])], "", api_name="/predict_sequence"
    )
    assert set(scores_of(scores)) == set(DEFAULT_LABELS)
    assert len(gallery) == 3


@pytest.mark.parametrize(
    ("endpoint", "make_args", "message"),
    [
        ("/predict_scan", lambda f: (handle_file(f["corrupt"]), ""), "obj"),
        (
            "/predict_scan",
            lambda f: (handle_file(f["wrong_ext"]), ""),
            "invalid file type|not a supported 3D scan type|corrupt number",
        ),
        ("/predict_sequence", lambda f: ([handle_file(f["empty_zip"])], ""), "no 3D frames"),
        (
            "/predict_sequence",
            lambda f: ([handle_file(f["zip"]), handle_file(f["scan"])], ""),
            "sequence.zip: a zip holds a whole sequence",
        ),
        ("/predict_views", lambda f: (None, None, None, ""), "at least one"),
        ("/predict_views", lambda f: (handle_file(f["front"]), None, None, "onlyone"), "at least two"),
        # a text file named .png: gr.Image's own reading failed before the handler ("The upstream Gradio app
        # has raised an exception"); the views go to the predictor as files, which names the file it cannot read
        (
            "/predict_views",
            lambda f: (handle_file(f["not_image"]), None, None, ""),
            "^frontal view: readme.png is not an image file that can be read$",
        ),
        (
            "/predict_views",
            lambda f: (handle_file(f["front"]), None, handle_file(f["not_image"]), ""),
            "^right view: readme.png is not an image file that can be read$",
        ),
    ],
    ids=["corrupt-mesh", "wrong-extension", "empty-zip", "zip-among-frames", "no-views", "one-label",
         "views-not-an-image", "right-view-not-an-image"],  # fmt: skip
)
def test_bad_inputs_get_clear_errors_and_the_app_keeps_serving(client, files, endpoint, make_args, message):
    with pytest.raises(Exception) as info:
        client.predict(*make_args(files), api_name=endpoint)
    assert re.search(message, str(info.value), re.IGNORECASE), str(info.value)
    # Still serving.
    scores, *_ = client.predict(handle_file(files["front"]), None, None, "", api_name="/predict_views")
    assert set(scores_of(scores)) == set(DEFAULT_LABELS)


def test_oversized_upload_is_refused(client, files):
    with pytest.raises(Exception) as info:
        client.predict(handle_file(files["huge"]), "", api_name="/predict_scan")
    assert "size" in str(info.value).lower() or "large" in str(info.value).lower()
    scores, *_ = client.predict(handle_file(files["front"]), None, None, "", api_name="/predict_views")
    assert scores_of(scores)


def test_explain_endpoint_paints_the_scan(client, files):
    overlays, painted = client.predict(handle_file(files["scan"]), "", api_name="/explain_scan")
    painted = painted["path"] if isinstance(painted, dict) else painted
    assert len(overlays) == 3 and str(painted).endswith(".glb")
    overlays, painted = client.predict(handle_file(files["scan"]), "", "surface", api_name="/explain_scan")
    assert len(overlays) == 3 and str(painted["path"] if isinstance(painted, dict) else painted).endswith(
        ".glb"
    )
    with pytest.raises(Exception, match="everything"):  # gradio checks a choice before the handler sees it
        client.predict(handle_file(files["scan"]), "", "everything", api_name="/explain_scan")


def test_batch_endpoint_returns_a_table_and_a_csv(client, tmp_path):
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("scan_*.ply"))
    with zipfile.ZipFile(tmp_path / "scans.zip", "w") as z:
        for path in examples:
            z.write(path, path.name)
        z.writestr("broken.obj", "v 1 2 three\n")
    table, csv_file = client.predict(handle_file(str(tmp_path / "scans.zip")), "", api_name="/predict_batch")
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {p.name for p in examples} | {"broken.obj"}
    assert rows["broken.obj"][-1]  # an error, not a crash
    local = csv_file["path"] if isinstance(csv_file, dict) else csv_file  # the server runs on this machine
    text = Path(local).read_text()
    assert text.startswith("file,label,") and "broken.obj" in text


def test_app_help_explains_its_settings_and_starts_nothing():
    """`python app.py --help` answers at once (before gradio or the model load) with the environment variables
    that set the app up; an argument it does not take is refused, saying so, instead of being ignored."""
    import subprocess
    import sys
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "app.py"
    shown = subprocess.run([sys.executable, str(app), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0
    for variable in ("AFFECTVLM_MODEL", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME", "affectvlm-ict"):
        assert variable in shown.stdout
    assert "Running on" not in shown.stdout + shown.stderr
    refused = subprocess.run([sys.executable, str(app), "--port", "80"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "takes no arguments (got --port 80)" in refused.stderr and "GRADIO_SERVER_PORT" in refused.stderr
