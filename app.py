"""AffectVLM demo: facial expressions from three views, a 3D scan or a 4D sequence, scored against any labels.

    python app.py                      # http://127.0.0.1:7860, the demo checkpoint shipped with the repo
    AFFECTVLM_MODEL=user/model python app.py

Handlers first, then the layout, then the wiring (every event has an api_name, so `gradio_client` can call
each one). The model is loaded once, at start-up. Every handler calls the predictor once: the predictor owns
the path from file to answer (load, normalise once, render, score) and returns the normalised scan to preview.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from affectvlm.predictor import AffectVLMPredictor, InputError, InputLimits, Prediction
from affectvlm.scan.io import SUPPORTED_EXTENSIONS

logger = logging.getLogger("affectvlm.app")

EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_FILE_MB = 100
LIMITS = InputLimits(max_file_bytes=MAX_FILE_MB * 1024**2, max_frames=200)
PREDICTOR = AffectVLMPredictor.from_pretrained(os.environ.get("AFFECTVLM_MODEL") or None, limits=LIMITS)
DEFAULT_LABELS_TEXT = ", ".join(PREDICTOR.default_labels)
VIEW_NAMES = list(PREDICTOR.processor.view_names)
MODEL_NOTE = (
    "**Model:** a small *random, untrained* model (no demo checkpoint found): the scores mean nothing."
    if PREDICTOR.is_random
    else f"**Model:** `{Path(PREDICTOR.source).name if os.path.isdir(PREDICTOR.source) else PREDICTOR.source}` "
    "(trained on SynthFER-3D, synthetic faces from the Surrey Face Model: non-commercial research use only)."
)


# -- handlers -------------------------------------------------------------------------------------------------

OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="affectvlm-outputs-"))
MAX_OUTPUT_FILES = 256


def _output_file(suffix: str, write) -> str:
    """A fresh file for one response (never rewritten while another response streams it); the newest
    MAX_OUTPUT_FILES are kept, so a long-running app does not fill the disk."""
    fd, name = tempfile.mkstemp(prefix="out-", suffix=suffix, dir=OUTPUT_DIR)
    os.close(fd)
    write(name)
    files = sorted(OUTPUT_DIR.glob("out-*"), key=_age)
    for path in files[:-MAX_OUTPUT_FILES]:
        path.unlink(missing_ok=True)
    return name


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by a concurrent request
        return 0.0


def _contribution_plot(result: Prediction) -> Figure:
    """Grouped bars: each available view's share of each label's logit."""
    contributions = result.contributions()
    labels = list(result.scores())
    fig = Figure(figsize=(6, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(contributions), 1)
    x = np.arange(len(labels))
    for i, (view, scores) in enumerate(contributions.items()):
        ax.bar(
            x + (i - (len(contributions) - 1) / 2) * width,
            [scores[label] for label in labels],
            width,
            label=view,
        )
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("share of the logit")
    ax.set_title("What each view contributed to each label", fontsize="medium")
    ax.legend(fontsize="small", frameon=False)
    return fig


def _outputs(result: Prediction, captions: list[str]) -> list:
    """Scores, the contribution chart, what the model saw, and the answer with its notes."""
    gallery = []
    if result.views is not None:
        for v, caption in enumerate(captions):
            if result.view_mask[v]:
                path = _output_file(".png", lambda name, v=v: Image.fromarray(result.views[v]).save(name))
                gallery.append((path, caption))
    notes = "".join(f"\n- {note}" for note in result.notes)
    answer = f"Most likely: **{result.label}** ({result.probs.max():.2f}){notes}"
    return [result.scores(), _contribution_plot(result), gallery, answer]


def _release_memory() -> None:
    """Hand freed heap memory back to the system after a request (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _serve(handler):
    """Run a handler: bad inputs become a gr.Error that names the problem; nothing else leaks to the page."""

    @functools.wraps(handler)
    def wrapper(*args):
        try:
            return handler(*args)
        except gr.Error:
            raise
        except InputError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception:  # noqa: BLE001 - the server keeps serving; the page gets a message, the log the trace
            logger.exception("request failed")
            raise gr.Error(
                "this input could not be scored (an internal error)", print_exception=False
            ) from None
        finally:
            _release_memory()

    return wrapper


def _path(file, allowed: tuple[str, ...], what: str) -> Path:
    if file is None:
        raise InputError(f"upload a {what}")
    path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
    if path.suffix.lower() not in allowed:
        raise InputError(
            f"{path.suffix or 'no extension'}: not a supported {what} type (use {', '.join(allowed)})"
        )
    return path


def _rgb(image: Image.Image | None, view: str) -> Image.Image | None:
    if image is None:
        return None
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        raise InputError(
            f"{view} view: image mode {image.mode!r} is not supported; use an 8-bit RGB or grey image"
        )
    return image.convert("RGB")


@_serve
def predict_views(front, left, right, labels_text):
    """Three images (any may be missing) -> scores, contribution chart, the views, the answer."""
    images = [_rgb(im, v) for im, v in zip((front, left, right), VIEW_NAMES)]
    result = PREDICTOR(images=images, labels=labels_text or DEFAULT_LABELS_TEXT)
    return _outputs(result, VIEW_NAMES)


def _preview(scan) -> str | None:
    """The normalised scan the views were rendered from, as a GLB (meshes only)."""
    import trimesh

    if scan is None or scan.is_point_cloud:
        return None
    mesh = trimesh.Trimesh(scan.vertices, scan.faces, vertex_colors=scan.colors, process=False)
    return _output_file(".glb", mesh.export)


@_serve
def predict_scan(file, labels_text):
    """A 3D scan -> scores, contribution chart, rendered views, the answer, a 3D preview."""
    path = _path(file, SUPPORTED_EXTENSIONS, "3D scan")
    result = PREDICTOR(scan=path, labels=labels_text or DEFAULT_LABELS_TEXT)
    return [*_outputs(result, VIEW_NAMES), _preview(result.scan)]


@_serve
def predict_sequence(files, labels_text):
    """A zip of frames, or several frame files -> scores, contribution chart, dynamic images, the answer."""
    files = [f for f in (files or []) if f is not None]
    if not files:
        raise InputError("upload a .zip of frames or several frame files")
    paths = [_path(f, (".zip", *SUPPORTED_EXTENSIONS), "frame") for f in files]
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        sequence = str(paths[0])
    else:
        from affectvlm.scan.archive import frame_order

        sequence = sorted(paths, key=lambda p: frame_order(p.name))
    result = PREDICTOR(sequence=sequence, labels=labels_text or DEFAULT_LABELS_TEXT)
    return _outputs(result, [f"{v} (dynamic image)" for v in VIEW_NAMES])


# -- layout ---------------------------------------------------------------------------------------------------


def _examples(pattern: str) -> list[str]:
    return sorted(str(p) for p in EXAMPLES.glob(pattern))


def _result_panel(tab: str) -> list:
    """One tab's own outputs (made unrendered, so the tab's examples can name them before they are laid out):
    the scores, the contribution chart, what the model saw, the answer."""
    return [
        gr.Label(label="Scores", num_top_classes=10, elem_id=f"{tab}-scores", render=False),
        gr.Plot(label="Contribution of each view", show_label=False, elem_id=f"{tab}-plot", render=False),
        gr.Gallery(
            label="What the model saw",
            columns=3,
            height=240,
            object_fit="contain",
            elem_id=f"{tab}-gallery",
            render=False,
        ),  # fmt: skip
        gr.Markdown(elem_id=f"{tab}-answer", elem_classes=["answer"], render=False),
    ]


def _lay_out(outputs: list) -> None:
    scores, plot, gallery, answer = outputs[:4]
    answer.render()
    with gr.Row():
        scores.render()
        plot.render()
    gallery.render()


def _labels_box(tab: str) -> gr.Textbox:
    return gr.Textbox(
        value=DEFAULT_LABELS_TEXT,
        label="Labels",
        info="Comma-separated labels, or one `label: prompt; another prompt` per line.",
        lines=2,
        elem_id=f"{tab}-labels",
    )


def examples_in_view_order(paths: list[str]) -> list[str]:
    """Example view images sorted into the model's view order by the view name in their file names."""
    return [next(p for p in paths if Path(p).stem.endswith(f"_{v}")) for v in VIEW_NAMES]


def _wire(tab: str, inputs: list, outputs: list, fn, examples: list[list], what: str) -> None:
    """A tab's button (its own labels box after `inputs`), its examples (run on click, kept out of the API),
    its outputs laid out, and its named API endpoint."""
    labels = _labels_box(tab)
    button = gr.Button(f"Score {tab}", variant="primary", elem_id=f"{tab}-button")
    # the button first, so that it owns the endpoint's name (the examples' event would take it otherwise)
    button.click(fn, [*inputs, labels], outputs, api_name=fn.__name__)
    if examples:
        gr.Examples([[*row, DEFAULT_LABELS_TEXT] for row in examples], [*inputs, labels], outputs, fn=fn,
                    run_on_click=True, api_visibility="private", label=what)  # fmt: skip
    _lay_out(outputs)


def _views_tab() -> None:
    with gr.Row():
        images = [
            gr.Image(label=v.capitalize(), type="pil", image_mode=None, elem_id=f"views-{v}")
            for v in VIEW_NAMES
        ]
    examples = _examples("views_*.png")
    rows = [examples_in_view_order(examples)] if len(examples) == len(VIEW_NAMES) else []
    _wire("views", images, _result_panel("views"), predict_views, rows,
          "Rendered views of a synthetic face (SynthFER-3D)")  # fmt: skip


def _scan_tab() -> None:
    with gr.Row():
        file = gr.File(
            label="3D scan", file_types=list(SUPPORTED_EXTENSIONS), type="filepath", elem_id="scan-file"
        )
        preview = gr.Model3D(label="Normalised scan (what was rendered)", elem_id="scan-preview")
    rows = [[p] for p in _examples("scan_*.ply")]
    _wire("scan", [file], [*_result_panel("scan"), preview], predict_scan, rows,
          "Synthetic example scans (SynthFER-3D)")  # fmt: skip


def _sequence_tab() -> None:
    files = gr.File(
        label="A .zip of frames, or several frame files",
        file_count="multiple",
        file_types=[".zip", *SUPPORTED_EXTENSIONS],
        type="filepath",
        elem_id="sequence-files",
    )
    rows = [[[p]] for p in _examples("sequence_*.zip")]
    _wire("sequence", [files], _result_panel("sequence"), predict_sequence, rows,
          "A synthetic 4D sequence (SynthFER-3D)")  # fmt: skip


# delete_cache: uploads and outputs older than an hour are removed every 30 minutes.
with gr.Blocks(title="AffectVLM", delete_cache=(1800, 3600)) as demo:
    gr.Markdown(
        "# AffectVLM\nRecognise facial expressions from 3D and 4D face scans with a multiview CLIP. "
        "Give three views, a 3D scan or a 4D sequence, and any labels: each label is scored by prompts.\n\n"
        + MODEL_NOTE
    )
    with gr.Tabs():
        with gr.Tab("3D scan", id="scan", elem_id="tab-scan"):
            _scan_tab()
        with gr.Tab("Three views", id="views", elem_id="tab-views"):
            _views_tab()
        with gr.Tab("4D sequence", id="sequence", elem_id="tab-sequence"):
            _sequence_tab()

demo.queue(max_size=64, default_concurrency_limit=2)

LAUNCH_KWARGS = dict(
    max_file_size=f"{MAX_FILE_MB}mb",
    enable_monitoring=False,
    show_error=False,  # gr.Error messages (written for people) still show; other exceptions stay private
    strict_cors=True,
    footer_links=["gradio", "settings"],
    allowed_paths=[str(EXAMPLES)],
)

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **LAUNCH_KWARGS)
