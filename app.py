"""AffectVLM demo: facial expressions from three views, a 3D scan or a 4D sequence, scored against any labels.

    python app.py                      # http://127.0.0.1:7860, the demo checkpoint shipped with the repo
    AFFECTVLM_MODEL=user/model python app.py

Handlers first, then the layout, then the wiring (every event has an api_name, so `gradio_client` can call
each one). The model is loaded once, at start-up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from affectvlm.predictor import AffectVLMPredictor, InputError, InputLimits, Prediction

SCAN_EXTENSIONS = [".obj", ".ply", ".stl", ".off", ".glb", ".wrl", ".bnt"]
FRAME_EXTENSIONS = [".obj", ".ply", ".stl", ".off", ".wrl", ".bnt"]
ACCEPTED_IMAGE_MODES = {"RGB", "RGBA", "L", "LA", "P"}
MAX_FILE_MB = 100
LIMITS = InputLimits(max_file_bytes=MAX_FILE_MB * 1024**2, max_vertices=2_000_000, max_faces=4_000_000,
                     max_frames=200, max_zip_bytes=1024**3)
DEFAULT_LABELS_TEXT = "anger, disgust, fear, happiness, sadness, surprise"

PREDICTOR = AffectVLMPredictor.from_pretrained(os.environ.get("AFFECTVLM_MODEL") or None, limits=LIMITS)
MODEL_NOTE = (
    "**Model:** a small *random, untrained* model (no demo checkpoint found): the scores mean nothing."
    if PREDICTOR.is_random
    else f"**Model:** `{Path(PREDICTOR.source).name if os.path.isdir(PREDICTOR.source) else PREDICTOR.source}` "
    "(trained on SynthFER-3D, synthetic faces from the Surrey Face Model: non-commercial research use only)."
)


# -- handlers -------------------------------------------------------------------------------------------------


def _labels(text: str | None):
    """Labels box -> labels or {label: prompts}: one label per line or comma; `label: prompt; prompt` lines."""
    text = (text or "").strip() or DEFAULT_LABELS_TEXT
    if ":" in text:
        prompts = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            label, _, rest = line.partition(":")
            prompts[label.strip()] = [p.strip() for p in rest.split(";") if p.strip()]
        return prompts
    return [x.strip() for x in text.replace("\n", ",").split(",") if x.strip()]


def _outputs(result: Prediction, captions: list[str]):
    contributions = pd.DataFrame(
        [
            {"label": label, "view": view, "contribution": round(value, 4)}
            for view, scores in result.contributions().items()
            for label, value in scores.items()
        ]
    )
    gallery = [(result.views[v], captions[v]) for v in range(len(captions))] if result.views is not None else []
    status = "\n".join(f"- {note}" for note in result.notes) or f"Most likely: **{result.label}**"
    return result.scores(), contributions, gallery, status


def _fail(err: Exception):
    raise gr.Error(str(err), print_exception=False)


def _check_image(image: Image.Image | None, view: str) -> Image.Image | None:
    if image is None:
        return None
    if image.mode not in ACCEPTED_IMAGE_MODES:
        raise gr.Error(
            f"{view} view: image mode {image.mode!r} is not supported; use an 8-bit RGB, RGBA or grey image",
            print_exception=False,
        )
    if image.width == 0 or image.height == 0:
        raise gr.Error(f"{view} view: the image is empty", print_exception=False)
    return image.convert("RGB")


def predict_views(front, left, right, labels_text):
    """Three images (any may be missing) -> label scores, per-view contributions, the views, a status line."""
    images = [_check_image(im, v) for im, v in zip((front, left, right), PREDICTOR.processor.view_names)]
    if all(im is None for im in images):
        raise gr.Error("upload at least one view", print_exception=False)
    try:
        result = PREDICTOR(images=images, labels=_labels(labels_text))
    except InputError as err:
        _fail(err)
    return _outputs(result, PREDICTOR.processor.view_names)


def _upload_path(file, allowed: list[str], what: str) -> Path:
    if file is None:
        raise gr.Error(f"upload a {what}", print_exception=False)
    path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
    if path.suffix.lower() not in allowed:
        raise gr.Error(
            f"{path.suffix or 'no extension'}: not a supported {what} type (use {', '.join(allowed)})",
            print_exception=False,
        )
    return path


PREVIEW_DIR = Path(tempfile.mkdtemp(prefix="affectvlm-previews-"))
MAX_PREVIEWS = 64


def _preview(scan) -> str | None:
    """The normalised scan as a GLB in a fresh temporary file (never a path derived from the upload).

    Only the newest MAX_PREVIEWS files are kept, so a long-running app does not fill the disk.
    """
    import trimesh

    if scan.faces is None or len(scan.faces) == 0:
        return None
    mesh = trimesh.Trimesh(scan.vertices, scan.faces, vertex_colors=scan.colors, process=False)
    fd, name = tempfile.mkstemp(prefix="preview-", suffix=".glb", dir=PREVIEW_DIR)
    os.close(fd)
    mesh.export(name)
    old = sorted(PREVIEW_DIR.glob("preview-*.glb"), key=lambda p: p.stat().st_mtime)[:-MAX_PREVIEWS]
    for path in old:
        path.unlink(missing_ok=True)
    return name


def predict_scan(file, labels_text):
    """A 3D scan -> label scores, contributions, rendered views, a 3D preview, a status line."""
    path = _upload_path(file, SCAN_EXTENSIONS, "3D scan")
    try:
        scan = PREDICTOR.load_scan(path)
        result = PREDICTOR(scan=scan, labels=_labels(labels_text))
    except InputError as err:
        _fail(err)
    scores, contributions, gallery, status = _outputs(result, PREDICTOR.processor.view_names)
    return scores, contributions, gallery, _preview(scan), status


def predict_sequence(files, labels_text):
    """A zip of frames, or several frame files -> label scores, contributions, dynamic images, a status line."""
    files = [f for f in (files or []) if f is not None]
    if not files:
        raise gr.Error("upload a .zip of frames or several frame files", print_exception=False)
    paths = [Path(f if isinstance(f, str) else getattr(f, "name", "")) for f in files]
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        sequence = str(paths[0])
    else:
        for p in paths:
            _upload_path(str(p), FRAME_EXTENSIONS, "frame")
        if len(paths) > LIMITS.max_frames:
            raise gr.Error(f"{len(paths)} frames is more than the limit of {LIMITS.max_frames}", print_exception=False)
        sequence = sorted(paths, key=lambda p: p.name)
    try:
        result = PREDICTOR(sequence=sequence, labels=_labels(labels_text))
    except InputError as err:
        _fail(err)
    return _outputs(result, [f"{v} (dynamic image)" for v in PREDICTOR.processor.view_names])


# -- examples: a few synthetic scans, made once on first start -----------------------------------------------


def make_examples(folder: Path) -> list[str]:
    """Write small SynthFER-3D example scans (if the face model is available); returns their paths."""
    try:
        from affectvlm.data.synth import SynthConfig, SynthFER3D
        from affectvlm.scan import write_obj
    except ImportError:
        return []
    paths = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        generator = SynthFER3D(SynthConfig(seed=2024, num_subjects=2))
        for subject, label in [(0, "happiness"), (1, "surprise"), (0, "anger")]:
            path = folder / f"synth_subject{subject}_{label}.obj"
            if not path.is_file():
                write_obj(path, generator.scan(subject, label, 4).to_scan())
            paths.append(str(path))
    except Exception as err:  # noqa: BLE001 - examples are optional; the app must start without them
        print(f"examples not available: {err}")
        return []
    return paths


EXAMPLE_SCANS = make_examples(Path(tempfile.gettempdir()) / "affectvlm-examples")


# -- layout ---------------------------------------------------------------------------------------------------

# delete_cache: uploads and outputs older than an hour are removed every 30 minutes.
with gr.Blocks(title="AffectVLM", delete_cache=(1800, 3600)) as demo:
    gr.Markdown(
        "# AffectVLM\nRecognise facial expressions from 3D and 4D face scans with a multiview CLIP. "
        "Give three views, a 3D scan or a 4D sequence, and any labels: each label is scored by prompts.\n\n"
        + MODEL_NOTE
    )
    # Outputs are made first (render=False) so the examples inside the scan tab can name them.
    status = gr.Markdown(elem_id="status", render=False)
    scores = gr.Label(label="Scores", num_top_classes=10, elem_id="scores", render=False)
    contributions = gr.BarPlot(
        x="label", y="contribution", color="view", label="Contribution of each view to the logit",
        x_label_angle=-30, render=False,
    )
    views_gallery = gr.Gallery(
        label="What the model saw", columns=3, height=280, object_fit="contain", elem_id="views-gallery",
        render=False,
    )
    scan_preview = gr.Model3D(label="Normalised scan", render=False)

    labels_box = gr.Textbox(
        value=DEFAULT_LABELS_TEXT,
        label="Labels",
        info="Comma-separated labels, or one `label: prompt; another prompt` per line.",
        lines=2,
    )
    with gr.Tabs():
        with gr.Tab("Three views"):
            with gr.Row():
                front_image = gr.Image(label="Frontal", type="pil", image_mode=None)
                left_image = gr.Image(label="Left", type="pil", image_mode=None)
                right_image = gr.Image(label="Right", type="pil", image_mode=None)
            views_button = gr.Button("Score views", variant="primary")
        with gr.Tab("3D scan"):
            with gr.Row():
                scan_file = gr.File(label="3D scan", file_types=SCAN_EXTENSIONS, type="filepath", elem_id="scan-file")
                scan_preview.render()
            scan_button = gr.Button("Score scan", variant="primary", elem_id="scan-button")
            if EXAMPLE_SCANS:
                # Outputs are cached lazily: the model runs on an example the first time someone clicks it.
                gr.Examples(
                    examples=[[p, DEFAULT_LABELS_TEXT] for p in EXAMPLE_SCANS],
                    inputs=[scan_file, labels_box],
                    outputs=[scores, contributions, views_gallery, scan_preview, status],
                    fn=predict_scan,
                    cache_examples=True,
                    cache_mode="lazy",
                    label="Synthetic example scans (SynthFER-3D)",
                    api_visibility="private",
                )
        with gr.Tab("4D sequence"):
            sequence_files = gr.File(
                label="A .zip of frames, or several frame files", file_count="multiple",
                file_types=[".zip", *FRAME_EXTENSIONS], type="filepath",
            )
            sequence_button = gr.Button("Score sequence", variant="primary")
    status.render()
    with gr.Row():
        scores.render()
        contributions.render()
    views_gallery.render()

    # -- wiring -----------------------------------------------------------------------------------------------
    views_button.click(
        predict_views, [front_image, left_image, right_image, labels_box],
        [scores, contributions, views_gallery, status], api_name="predict_views",
    )
    scan_button.click(
        predict_scan, [scan_file, labels_box], [scores, contributions, views_gallery, scan_preview, status],
        api_name="predict_scan",
    )
    sequence_button.click(
        predict_sequence, [sequence_files, labels_box], [scores, contributions, views_gallery, status],
        api_name="predict_sequence",
    )

demo.queue(max_size=64, default_concurrency_limit=2)

LAUNCH_KWARGS = dict(
    max_file_size=f"{MAX_FILE_MB}mb",
    enable_monitoring=False,
    show_error=False,  # gr.Error messages (written for people) still show; other exceptions stay private
    strict_cors=True,
    footer_links=["gradio", "settings"],
)

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **LAUNCH_KWARGS)
