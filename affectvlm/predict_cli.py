"""`python -m affectvlm predict PATH...`: score a scan, a 4D sequence or three view images."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .explain import HIDE
from .predictor import IMAGE_EXTENSIONS, AffectVLMPredictor, InputError
from .scan.cli import add_facing_argument

EPILOG = """examples:
  python -m affectvlm predict face.obj
  python -m affectvlm predict F0001_HA04WH_F3D.wrl --labels happiness sadness "a person in pain"
  python -m affectvlm predict frames/            # a folder of 3D frames: a 4D sequence
  python -m affectvlm predict sequence.zip --json
  python -m affectvlm predict scans/ --csv out.csv   # each scan of a folder or zip scored alone: one row each
  python -m affectvlm predict front.png left.png right.png   # three rendered views, in that order
  python -m affectvlm predict face.obj --explain relevance.glb  # where on the face the answer came from
  python -m affectvlm predict face.obj --explain relevance.glb --explain-hide surface  # each part hidden in all views
  python -m affectvlm predict face.obj --model affectvlm-ict    # a shipped checkpoint by name
  python -m affectvlm predict bust.obj --facing -z   # the face looks along -z (when auto draws it from the side)

Output paths (--explain, --csv) and options are checked before any scan is scored; a problem with them or with
an input prints one line, `error: ...`, and exits 2.
"""
# what --explain writes
EXPLAIN_SUFFIXES = (".glb",)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score a scan, a sequence or three view images against labels",
        description="Score a 3D scan, a 4D sequence (folder or zip of frames) or three view images "
        "(frontal, left, right) against labels, and print a table (or JSON).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="one scan file, one folder or zip of frames, or three images (front left right); "
                        "with --csv, one folder or zip of scans")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="labels to score (default: the model's own labels); any words work; each argument "
                        "may hold several, split by commas, or be 'label: prompt; prompt'")
    parser.add_argument("--model", default=None,
                        help="a saved model folder, a Hub id, or the name of a checkpoint shipped in "
                        "checkpoints/ (e.g. affectvlm-ict, MIT-licensed; default: the shipped default model)")
    parser.add_argument("--explain", metavar="OUT.glb", default=None,
                        help="also write the scan painted by where the top label came from (occlusion "
                        "relevance, red = hiding it lowers the score) as a GLB; scans only")
    parser.add_argument("--explain-hide", choices=HIDE, default=None,
                        help="with --explain, what it hides: one view's window at a time (view, the default), or "
                        "the part of the face under it in every view that shows it (surface, as removing it from "
                        "the scan would; about 3x slower)")
    add_facing_argument(parser, "; scans and sequences only")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--csv", metavar="OUT.csv", default=None,
                        help="score each scan of the folder or zip PATH separately (not as one 4D sequence) "
                        "and write one row per scan to OUT.csv")
    parser.set_defaults(func=run)


def _labels_text(labels: list[str] | None) -> str | None:
    """The --labels words as the app's labels box reads them (`parse_labels`): each argument a line, so that
    `"happiness, sadness"` is two labels and `"happiness: a smiling face"` a label with its own prompt."""
    return "\n".join(labels) if labels else None


def check_output(path: str, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """The file `option` (--csv, --explain) names, checked before any work: its folder exists and is writable,
    it is not a folder, and it ends in one of `suffixes` (when given); `InputError` otherwise."""
    out = Path(path)
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(f"{option} writes {' or '.join(suffixes)} files; got {out.name!r} (try {out.stem}{suffixes[0]})")
    if out.is_dir():
        raise InputError(f"cannot write {out}: it is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: no folder {out.parent}")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(f"cannot write {out}: permission denied")
    return out


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together and output paths that cannot be written, before any scoring."""
    if args.explain_hide is not None and not args.explain:
        raise InputError("--explain-hide needs --explain")
    if args.explain and args.csv:
        raise InputError("--explain paints one scan; it does not go with --csv")
    if args.explain:
        check_output(args.explain, "--explain", EXPLAIN_SUFFIXES)
    if args.csv:
        check_output(args.csv, "--csv")


def _input_kind(paths: list[Path]) -> str:
    """"images" (three views), "sequence" (a folder or zip of frames) or "scan"; `InputError` for other sets."""
    images = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in paths)
    if images and (images != 3 or len(paths) != 3):
        raise InputError(f"three view images (frontal, left, right) are scored together; got {images} image(s)")
    if images == 3:
        return "images"
    if len(paths) == 1:
        return "sequence" if paths[0].is_dir() or paths[0].suffix.lower() == ".zip" else "scan"
    raise InputError("give one scan, one folder or zip of frames, or exactly three images")


def _score(args: argparse.Namespace, paths: list[Path], labels: str | None):
    """(the predictor, its result for `paths`), the relevance written to --explain when asked for."""
    kind = _input_kind(paths)
    if args.explain and kind != "scan":
        raise InputError("--explain paints a scan: give one scan file")
    if args.facing != "auto" and kind == "images":
        raise InputError("--facing says which way a scan's face looks: images are already drawn from the front")
    predictor = AffectVLMPredictor.from_pretrained(args.model, device=args.device)
    if kind == "images":
        return predictor, predictor(images=[str(p) for p in paths], labels=labels)
    if kind == "sequence":
        return predictor, predictor(sequence=str(paths[0]), labels=labels, facing=args.facing)
    hide = args.explain_hide or HIDE[0]
    result = predictor(
        scan=str(paths[0]), labels=labels, explain=bool(args.explain), explain_hide=hide, facing=args.facing
    )
    if args.explain:
        try:
            result.relevance.write_glb(args.explain)
        except OSError as err:
            raise InputError(f"cannot write {args.explain}: {err.strerror or err}") from None
    return predictor, result


def run(args: argparse.Namespace) -> int:
    paths, labels = [Path(p) for p in args.paths], _labels_text(args.labels)
    if args.csv:
        return run_batch(args, paths)
    try:
        _check_options(args)
        predictor, result = _score(args, paths, labels)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": predictor.source, **result.to_dict()}, indent=2))
    else:
        print(f"model: {predictor.source}")
        for note in result.notes:
            print(f"note: {note}")
        print(result.table())
        print(f"prediction: {result.label}")
        if result.action_units:
            top = sorted(result.action_units.items(), key=lambda kv: -kv[1])[:5]
            print("action units: " + ", ".join(f"{name} {p:.2f}" for name, p in top))
        if result.frame_answers():
            each = (f"{f['frame']} {f['label']} {f['scores'][f['label']]:.2f}" for f in result.frame_answers())
            print("frames pooled, each scored alone: " + ", ".join(each))
    if args.explain:
        print(f"relevance of {result.relevance.label!r} written to {args.explain}", file=sys.stderr)
    return 0


def run_batch(args: argparse.Namespace, paths: list[Path]) -> int:
    """--csv: every scan of one folder or zip scored alone, one CSV row each; 2 when the batch cannot run."""
    from tqdm import tqdm

    from .batch import score_batch, write_csv

    out = Path(args.csv)
    try:
        _check_options(args)
        if len(paths) != 1 or not (paths[0].is_dir() or paths[0].suffix.lower() == ".zip"):
            raise InputError("with --csv, give one folder or .zip file of scans")
        predictor = AffectVLMPredictor.from_pretrained(args.model, device=args.device)
        with tqdm(desc="scoring", unit="scan", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(i: int, n: int, name: str) -> None:
                bar.total = n
                bar.set_postfix_str(name, refresh=False)
                bar.update(1)

            rows = score_batch(
                predictor, paths[0], labels=_labels_text(args.labels), progress=progress, facing=args.facing
            )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        write_csv(rows, out)
    except OSError as err:
        print(f"error: cannot write {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    errors = sum(bool(row["error"]) for row in rows)
    print(f"{len(rows) - errors} scored, {errors} error{'s' * (errors != 1)}: {len(rows)} rows written to {out}")
    return 0
