"""AffectVLM demo: facial expressions from three views, a 3D scan or a 4D sequence, scored against any labels.

    python app.py                                 # http://127.0.0.1:7860, the default model shipped with the repo
    AFFECTVLM_MODEL=affectvlm-ict python app.py   # a shipped checkpoint by name (MIT), a folder or a Hub id

Handlers first, then the layout, then the wiring (every event has an api_name, so `gradio_client` can call
each one). The model is loaded once, at start-up. Every handler calls the predictor once: the predictor owns
the path from file to answer (load, normalise once, render, score; action units, the label check and, when
asked, the explanation) and returns the normalised scan to preview.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

USAGE = """usage: python app.py   (no arguments: set up by environment variables)

Starts the AffectVLM demo (Gradio) and prints its address; stop it with Ctrl-C.

environment variables:
  AFFECTVLM_MODEL       the model to serve: a shipped checkpoint's name (affectvlm-cpu, the default;
                        affectvlm-ict, MIT-licensed), a saved model folder, or a Hub id owner/name
  GRADIO_SERVER_NAME    the address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  GRADIO_SERVER_PORT    the port (default 7860, or the next free one)
  AFFECTVLM_DTYPE       float32 or bfloat16 (default: bf16 on CPUs with AMX or AVX512-BF16 and bf16 GPUs, else fp32)
  HF_HUB_OFFLINE=1      never touch the network (the shipped models need none)
"""


def _usage(argv: list[str]) -> int | None:
    """`python app.py --help`: USAGE, exit 0; any other argument: USAGE with the reason, exit 2; none: None."""
    if not argv:
        return None
    if {"-h", "--help"} & set(argv):
        print(USAGE)
        return 0
    print(f"app.py takes no arguments (got {' '.join(argv)})\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__" and (_code := _usage(sys.argv[1:])) is not None:
    raise SystemExit(_code)  # before gradio, torch and the model load (seconds)

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from affectvlm.explain import HIDE
from affectvlm.predictor import AffectVLMPredictor, InputError, InputLimits, Prediction
from affectvlm.scan.io import SUPPORTED_EXTENSIONS
from affectvlm.scan.normalize import FACINGS

logger = logging.getLogger("affectvlm.app")

EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_FILE_MB = 100
# Above the answer when a note says the input may not be a face (`Prediction.may_not_be_a_face`), and, shorter, as
# the score panel's large headline in place of the top label (the scores beneath it are still the model's).
NOT_A_FACE_HEADLINE = "**This may not be a face, or one unlike any the model learnt from: the answer below is not reliable.**"
NOT_A_FACE_LABEL = "may not be a face"
TOP_CLASSES = 10  # the score panel's rows
LIMITS = InputLimits(max_file_bytes=MAX_FILE_MB * 1024**2, max_frames=200)
PREDICTOR = AffectVLMPredictor.from_pretrained(os.environ.get("AFFECTVLM_MODEL") or None, limits=LIMITS)
PREDICTOR.warm_up()  # the text encoder's work for the default labels, done before the first visitor comes
DEFAULT_LABELS_TEXT = ", ".join(PREDICTOR.default_labels)
VIEW_NAMES = list(PREDICTOR.processor.view_names)
# what an explanation's occlusion window hides (affectvlm.explain.HIDE), as the scan tab offers it
EXPLAIN_HIDE = [("one view at a time", HIDE[0]), ("the face under it, in every view (slower)", HIDE[1])]
# which way the face looks in the file (`AffectVLMPredictor.__call__`'s `facing`): found from the face, or given
FACING_CHOICES = [("found from the face", "auto")] + [
    (f"{axis}, {'z' if axis[1] == 'y' else 'y'} up", axis) for axis in FACINGS[1:]
]


def _model_note(predictor: AffectVLMPredictor) -> str:
    """The served model's name, what it was trained on and its licence, from its model card."""
    if predictor.is_random:
        return "**Model:** a small *random, untrained* model (no checkpoint found): the scores mean nothing."
    name = Path(predictor.source).name if os.path.isdir(predictor.source) else predictor.source
    card = predictor.card
    summary = f" {card['summary']}" if card.get("summary") else ""
    licence = card.get("license_name") or card.get("license")
    return f"**Model:** `{name}`.{summary}" + (f" **Licence:** {licence}." if licence else "")


MODEL_NOTE = _model_note(PREDICTOR)


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


def _au_plot(result: Prediction, shown: int = 12) -> Figure | None:
    """Horizontal bars: the probability of each action unit the model reads, the likeliest first."""
    if not result.action_units:
        return None
    top = sorted(result.action_units.items(), key=lambda kv: -kv[1])[:shown][::-1]
    fig = Figure(figsize=(6, 0.25 * len(top) + 0.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.barh([name for name, _ in top], [p for _, p in top], color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="0.6", linewidth=0.8, linestyle="--")
    ax.tick_params(axis="y", labelsize="small")
    ax.set_xlabel("probability the action unit is active")
    ax.set_title("Action units (FACS) the model reads", fontsize="medium")
    return fig


def _vocabulary(labels_text: str) -> str:
    """What the model makes of each label: its nearest trained emotion or AU description, flagged when far."""
    checks = PREDICTOR.check_labels(labels_text or DEFAULT_LABELS_TEXT)
    lines = []
    for c in checks:
        line = f"- **{c.label}** → {c.nearest} ({c.similarity:.2f})"
        if c.unknown_words:
            line += f": **not understood**, the tokenizer does not know {', '.join(c.unknown_words)}"
        elif not c.understood:
            line += ": **not understood**, far from anything the model was trained on; its score means little"
        lines.append(line)
    return "**What the model makes of your labels** (nearest trained label, similarity):\n" + "\n".join(lines)


def _gallery(images: np.ndarray, mask, captions: list[str]) -> list:
    return [
        (_output_file(".png", lambda name, v=v: Image.fromarray(images[v]).save(name)), caption)
        for v, caption in enumerate(captions)
        if mask[v]
    ]


def _headlined(scores: dict[str, float], headline: str) -> str:
    """The score panel's value with `headline` shown large in place of the top label, the scores beneath it as they
    are: a .json file of gr.Label's own data (which it reads as given, without sorting or cutting it)."""
    rows = [{"label": label, "confidence": p} for label, p in list(scores.items())[:TOP_CLASSES]]
    text = json.dumps({"label": headline, "confidences": rows})
    return _output_file(".json", lambda name: Path(name).write_text(text, encoding="utf-8"))


def _outputs(result: Prediction, captions: list[str], labels_text: str) -> list:
    """Scores, the contribution chart, what the model saw, the answer with its notes, the action units, and
    what the model made of the labels."""
    gallery = _gallery(result.views, result.view_mask, captions) if result.views is not None else []
    notes = "".join(f"\n- {note}" for note in result.notes)
    answer = f"Most likely: **{result.label}** ({result.probs.max():.2f}){notes}"
    scores = result.scores()
    if result.may_not_be_a_face:  # said first, and in place of the top label the score panel shows large
        answer = f"{NOT_A_FACE_HEADLINE}\n\n{answer}"
        scores = _headlined(scores, NOT_A_FACE_LABEL)
    return [
        scores,
        _contribution_plot(result),
        gallery,
        answer,
        _au_plot(result),
        _vocabulary(labels_text),
    ]


def _release_memory() -> None:
    """Hand freed heap memory back to the system after a request (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _serve(handler):
    """Run a handler: bad inputs become a gr.Error that names the problem; nothing else leaks to the page."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
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


def _image_file(image, view: str) -> str | None:
    """A view as its file: an upload's path (the views button's event skips gr.Image's own reading, which failed
    on a file that is no image with a generic error; its value is gradio's file data), or the path
    gr.Image(type="filepath") gives for an example."""
    if not isinstance(image, dict):
        return image
    if not image.get("path"):
        raise InputError(f"{view} view: upload the image as a file")
    return image["path"]


@_serve
def predict_views(front, left, right, labels_text):
    """Three images (any may be missing) -> scores, contribution chart, the views, the answer. The images go to
    the predictor as the uploaded files: it reads every mode (16-bit, transparency over black, CMYK), and names a
    file it cannot read ("frontal view: x.png is not an image file that can be read")."""
    files = [_image_file(image, view) for image, view in zip((front, left, right), VIEW_NAMES)]
    result = PREDICTOR(images=files, labels=labels_text or DEFAULT_LABELS_TEXT)
    return _outputs(result, VIEW_NAMES, labels_text)


def _preview(scan) -> str | None:
    """The normalised scan the views were rendered from, as a GLB: its triangles, or a cloud's points."""
    import trimesh

    if scan is None:
        return None
    if scan.is_point_cloud:  # dark grey points where the cloud has no colours: white ones vanish on white
        colors = scan.colors if scan.colors is not None else np.full((scan.num_vertices, 3), 70, np.uint8)
        shape = trimesh.PointCloud(scan.vertices, colors=colors)
    else:
        shape = trimesh.Trimesh(scan.vertices, scan.faces, vertex_colors=scan.colors, process=False)
    return _output_file(".glb", shape.export)


@_serve
def predict_scan(file, labels_text, facing="auto"):
    """A 3D scan -> scores, contribution chart, rendered views, the answer, a 3D preview. `facing`: which way the
    face looks in the file ("auto": found from the face; "-z": along -z, `FACINGS`)."""
    path = _path(file, SUPPORTED_EXTENSIONS, "3D scan")
    result = PREDICTOR(scan=path, labels=labels_text or DEFAULT_LABELS_TEXT, facing=facing or "auto")
    outputs = _outputs(result, VIEW_NAMES, labels_text)
    return [*outputs[:4], _preview(result.scan), *outputs[4:]]


@_serve
def explain_scan(file, labels_text, hide=HIDE[0], facing="auto"):
    """A 3D scan -> where on the face the top label came from: overlays on the views, the painted scan. `hide`:
    one view's window at a time ("view") or the part of the face under it in every view ("surface")."""
    path = _path(file, SUPPORTED_EXTENSIONS, "3D scan")
    result = PREDICTOR(
        scan=path, labels=labels_text or DEFAULT_LABELS_TEXT, explain=True, explain_hide=hide, facing=facing or "auto"
    )
    rel = result.relevance
    captions = [f"{v}: where '{rel.label}' came from" for v in VIEW_NAMES]
    painted = _output_file(".glb", rel.write_glb) if rel.scan is not None else None
    return _gallery(rel.overlays, result.view_mask, captions), painted


@_serve
def predict_batch(file, labels_text, facing="auto", progress=gr.Progress()):  # noqa: B008 (gradio's progress pattern)
    """A .zip of scans -> one row per scan (file, top label, each score, notes, error) and the table as CSV.
    `facing`: which way every scan's face looks, as `predict_scan` takes it."""
    from affectvlm.batch import score_batch, write_csv

    path = _path(file, (".zip",), "zip of scans")

    def step(i: int, n: int, name: str) -> None:
        progress((i, n), desc=f"scored {name}")

    labels = labels_text or DEFAULT_LABELS_TEXT
    rows = score_batch(PREDICTOR, path, labels=labels, progress=step, facing=facing or "auto")
    table = _output_file(".csv", lambda name: write_csv(rows, name))
    return {"headers": list(rows[0]) if rows else [], "data": [list(row.values()) for row in rows]}, table


@_serve
def predict_sequence(files, labels_text, facing="auto"):
    """A zip of frames, or several frame files -> scores, contribution chart, dynamic images, the answer.
    `facing`: which way the face looks in the files, as `predict_scan` takes it."""
    files = [f for f in (files or []) if f is not None]
    if not files:
        raise InputError("upload a .zip of frames or several frame files")
    paths = [_path(f, (".zip", *SUPPORTED_EXTENSIONS), "frame") for f in files]
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        sequence = str(paths[0])
    else:
        from affectvlm.scan.archive import frame_files, refuse_archives

        refuse_archives(paths)  # a zip among other files is a mistake to name, not a file to leave out
        sequence = frame_files(paths)  # as a folder's: hidden files and a README.txt beside the frames left out
    result = PREDICTOR(sequence=sequence, labels=labels_text or DEFAULT_LABELS_TEXT, facing=facing or "auto")
    strip = _gallery(
        result.frames,
        np.ones(len(result.frames), bool),
        [f"frame {n}" for n in result.frame_numbers],
    )
    return [
        *_outputs(result, [f"{v} (dynamic image)" for v in VIEW_NAMES], labels_text),
        strip,
        _frame_plot(result),
    ]


def _frame_plot(result: Prediction) -> Figure:
    """Each label's probability in each frame, scored on its own as a static scan, by the frame's place in the
    sequence."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for c, label in enumerate(result.labels):
        ax.plot(result.frame_numbers, result.frame_probs[:, c], marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame of the sequence (those the dynamic images pool)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title("Each frame scored alone", fontsize="medium")
    ax.legend(fontsize="x-small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# -- layout ---------------------------------------------------------------------------------------------------


def _examples(pattern: str) -> list[str]:
    return sorted(str(p) for p in EXAMPLES.glob(pattern))


def _result_panel(tab: str) -> list:
    """One tab's own outputs (made unrendered, so the tab's examples can name them before they are laid out):
    the scores, the contribution chart, what the model saw, the answer."""
    return [
        gr.Label(label="Scores", num_top_classes=TOP_CLASSES, elem_id=f"{tab}-scores", render=False),
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
        gr.Plot(label="Action units", show_label=False, elem_id=f"{tab}-aus", render=False),
        gr.Markdown(elem_id=f"{tab}-vocabulary", render=False),
    ]


def _lay_out(panel: list) -> None:
    scores, plot, gallery, answer, aus, vocabulary = panel
    answer.render()
    with gr.Row():
        scores.render()
        aus.render()
    with gr.Row():
        gallery.render()
        plot.render()
    vocabulary.render()


def _labels_box(tab: str) -> gr.Textbox:
    return gr.Textbox(
        value=DEFAULT_LABELS_TEXT,
        label="Labels",
        info="Comma-separated labels; a line `label: prompt; another prompt` gives a label its own prompts.",
        lines=2,
        elem_id=f"{tab}-labels",
    )


def examples_in_view_order(paths: list[str]) -> list[str]:
    """Example view images sorted into the model's view order by the view name in their file names."""
    return [next(p for p in paths if Path(p).stem.endswith(f"_{v}")) for v in VIEW_NAMES]


def _au_prompt_picker(labels: gr.Textbox, tab: str) -> None:
    """Action-unit descriptions offered as ready-made labels: picking one adds it to the labels box."""
    from affectvlm.prompts import au_prompts

    if not PREDICTOR.model.config.au_logit_bias:
        return
    choices = {name: prompts[0].removesuffix(".") for name, prompts in au_prompts().items()}
    picker = gr.Dropdown(list(choices), label="Add an action-unit description as a label", value=None,
                         elem_id=f"{tab}-au-picker")  # fmt: skip

    def add(name, text):
        """The pick on a line of its own, `AU5 upper lid raiser: a face with ..., eyes wide open`: one label
        whose prompt is the description (descriptions hold commas, which would split it into several labels)."""
        return (text.rstrip(", \n") + f"\n{name}: {choices[name]}").lstrip("\n") if name else text

    picker.input(add, [picker, labels], labels, api_visibility="private")


def _wire(
    tab: str, inputs: list, outputs: list, fn, examples: list[list], what: str, panel=None, preprocess=True,
    after: tuple = (),
) -> gr.Textbox:
    """A tab's button (its own labels box after `inputs`, then the inputs `after` it: the facing), its examples
    (run on click, kept out of the API), its result panel laid out, and its named API endpoint. Returns the labels
    box. `preprocess=False`: the button's event hands `fn` the inputs as sent (an upload as gradio's file data, not
    read by the component)."""
    labels = _labels_box(tab)
    _au_prompt_picker(labels, tab)
    button = gr.Button(f"Score {tab}", variant="primary", elem_id=f"{tab}-button")
    # the button first, so that it owns the endpoint's name (the examples' event would take it otherwise)
    button.click(fn, [*inputs, labels, *after], outputs, api_name=fn.__name__, preprocess=preprocess)
    if examples:
        gr.Examples([[*row, DEFAULT_LABELS_TEXT] for row in examples], [*inputs, labels], outputs, fn=fn,
                    run_on_click=True, api_visibility="private", label=what)  # fmt: skip
    _lay_out(panel or outputs)
    return labels


def _views_tab() -> None:
    with gr.Row():
        images = [
            gr.Image(label=v.capitalize(), type="filepath", image_mode=None, elem_id=f"views-{v}")
            for v in VIEW_NAMES
        ]
    examples = _examples("views_*.png")
    sets = sorted({Path(p).stem.rsplit("_", 1)[0] for p in examples})  # one scan's views share a stem
    rows = [
        examples_in_view_order([p for p in examples if Path(p).stem.rsplit("_", 1)[0] == s]) for s in sets
    ]
    # uploads go to the predictor unread by gr.Image (which fails on a file that is no image, before the handler)
    _wire("views", images, _result_panel("views"), predict_views, rows,
          "Rendered views of a synthetic face (SynthFER-3D)", preprocess=False)  # fmt: skip


def _facing_box(tab: str) -> gr.Dropdown:
    """Which way the face looks in the file: found from the face unless its user says."""
    return gr.Dropdown(
        FACING_CHOICES, value="auto", label="Which way the face looks in the file", allow_custom_value=True,
        info="Found from the face; if the rendered views show the side or back of the head, pick the axis the face "
        "looks along (or type it with the axis up, e.g. '+z,-y' for a file upside down)", elem_id=f"{tab}-facing",
    )  # fmt: skip


def _scan_tab() -> None:
    with gr.Row():
        with gr.Column():
            file = gr.File(
                label="3D scan", file_types=list(SUPPORTED_EXTENSIONS), type="filepath", elem_id="scan-file"
            )
            facing = _facing_box("scan")
        preview = gr.Model3D(label="Normalised scan (what was rendered)", elem_id="scan-preview")
    rows = [[p] for p in _examples("scan_*.ply")]
    panel = _result_panel("scan")
    labels = _wire("scan", [file], [*panel[:4], preview, *panel[4:]], predict_scan, rows,
                   "Synthetic example scans (SynthFER-3D)", panel=panel, after=(facing,))  # fmt: skip
    with gr.Accordion("Where on the face did the answer come from?", open=False):
        with gr.Row():
            hide = gr.Radio(EXPLAIN_HIDE, value=HIDE[0], label="What each occlusion window hides",
                            elem_id="scan-explain-hide")  # fmt: skip
            button = gr.Button("Explain the top label", elem_id="scan-explain-button")
        with gr.Row():
            overlays = gr.Gallery(label="Relevance on the views (red: hiding it lowers the score)", columns=3,
                                  height=240, object_fit="contain", elem_id="scan-explain-gallery")  # fmt: skip
            painted = gr.Model3D(label="Relevance on the scan", elem_id="scan-explain-model")
    button.click(explain_scan, [file, labels, hide, facing], [overlays, painted], api_name="explain_scan")


def _batch_tab() -> None:
    gr.Markdown(
        "Score every scan of a `.zip` on its own: one row per scan, and the table as a CSV to download."
    )
    file = gr.File(label="A .zip of scans", file_types=[".zip"], type="filepath", elem_id="batch-file")
    facing = _facing_box("batch")
    labels = _labels_box("batch")
    button = gr.Button("Score batch", variant="primary", elem_id="batch-button")
    table = gr.Dataframe(label="Scores", wrap=True, elem_id="batch-table", interactive=False)
    csv = gr.File(label="Download the table (CSV)", elem_id="batch-csv")
    button.click(predict_batch, [file, labels, facing], [table, csv], api_name="predict_batch")


def _sequence_tab() -> None:
    files = gr.File(
        label="A .zip of frames, or several frame files",
        file_count="multiple",
        file_types=[".zip", *SUPPORTED_EXTENSIONS],
        type="filepath",
        elem_id="sequence-files",
    )
    facing = _facing_box("sequence")
    rows = [[[p]] for p in _examples("sequence_*.zip")]
    panel = _result_panel("sequence")
    strip = gr.Gallery(label="The frames (frontal view)", columns=8, height=140, object_fit="contain",
                       elem_id="sequence-frames", render=False)  # fmt: skip
    per_frame = gr.Plot(
        label="Per-frame scores", show_label=False, elem_id="sequence-frame-plot", render=False
    )
    _wire("sequence", [files], [*panel, strip, per_frame], predict_sequence, rows,
          "A synthetic 4D sequence (SynthFER-3D)", panel=panel, after=(facing,))  # fmt: skip
    strip.render()
    per_frame.render()


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
        with gr.Tab("Batch", id="batch", elem_id="tab-batch"):
            _batch_tab()

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
