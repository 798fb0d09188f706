"""`python -m affectvlm render`: render scans to PNG views, or a 4D sequence to dynamic images.

python -m affectvlm render face.obj --out views/                 # views/face_frontal.png, ...
python -m affectvlm render F001/Happy/ --out dyn/ --mode depth   # dynamic images of a sequence
python -m affectvlm render sequence.zip --out dyn/               # a zip of frames, likewise
python -m affectvlm render 000.wrl 001.wrl 002.wrl --out dyn/    # a list of frames, likewise
python -m affectvlm render face.ply --views=0,-45,45:10 --size 256 --out views/
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from .archive import collect_frames, extract_frames, refuse_archives

__all__ = ["add_parser", "run", "parse_views", "collect_frames", "add_facing_argument", "joined_facing"]

FACING_HELP = (
    "which way the face looks in the file: auto (the default: found from the face), or the axis it looks along, "
    "+z, -z, +x, -x, +y or -y, optionally with the axis that points up ('-y,+z'; default +y, or +z for a face "
    "looking along y). For a scan that auto draws from the side or from behind (a statue's bust)"
)


def _say(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout)  # noqa: T201 (the command line talks to people)


def _facing(text: str) -> str:
    """--facing's value, checked (`affectvlm.scan.normalize.facing_turn`)."""
    from .normalize import facing_turn

    try:
        facing_turn(text.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("orient", "facing")) from None
    return text.strip()


def add_facing_argument(parser: argparse.ArgumentParser, where: str = "") -> None:
    """The --facing option (`FACING_HELP`, then `where` it applies), shared by `render` and `predict`."""
    parser.add_argument("--facing", type=_facing, default="auto", metavar="AXIS", help=FACING_HELP + where)


def joined_facing(argv: list[str]) -> list[str]:
    """`--facing -z` as `--facing=-z`: argparse takes a value that starts with '-' for an option of its own."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--facing" and len(out[i + 1]) > 1 and out[i + 1][0] == "-" and out[i + 1][1] in "xyzXYZ":
            out[i : i + 2] = [f"--facing={out[i + 1]}", ""]
    return [a for a in out if a != ""]


def parse_views(spec: str) -> list[tuple[float, float]]:
    """'0,20,-20:10' -> [(0, 0), (20, 0), (-20, 10)]: comma-separated yaw[:pitch] in degrees."""
    views = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 2:
            raise argparse.ArgumentTypeError(f"view {item!r} is not yaw or yaw:pitch")
        try:
            yaw = float(parts[0])
            pitch = float(parts[1]) if len(parts) == 2 else 0.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"view {item!r} is not yaw or yaw:pitch in degrees") from None
        views.append((yaw, pitch))
    if not views:
        raise argparse.ArgumentTypeError("no views given")
    return views


MAX_SIZE = 2048  # pixels a side: three 2048 px views take about 0.3 GB to render


def _size(text: str) -> int:
    """--size: whole pixels, 8 to `MAX_SIZE`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels") from None
    if not 8 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{value}: the size is 8 to {MAX_SIZE} pixels")
    return value


def _length(text: str, zero: bool = False) -> float:
    """A finite number above 0 (or at least 0 with `zero`), for lengths and radii."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number {'>= 0' if zero else '> 0'}")
    return value


def _view_names(views) -> list[str]:
    from .render import DEFAULT_VIEWS, VIEW_NAMES

    if list(views) == list(DEFAULT_VIEWS):
        return list(VIEW_NAMES)
    return [f"yaw{yaw:+g}_pitch{pitch:+g}" for yaw, pitch in views]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `render` command to a `python -m affectvlm` subparsers object."""
    from .render import DEFAULT_VIEWS, MODES

    default = ",".join(f"{y:g}:{p:g}" if p else f"{y:g}" for y, p in DEFAULT_VIEWS)
    parser = subparsers.add_parser(
        "render",
        help="render a scan's views (or a sequence's dynamic images) to PNG",
        description=(
            "Render one scan file to one PNG per view; a 4D sequence (a folder or .zip of frames, or several "
            "frame files) to one dynamic image per view (approximate rank pooling over the frames)."
        ),
    )
    parser.add_argument(
        "scans", nargs="+", metavar="SCAN",
        help="a scan file, a folder or .zip of frames, or several frame files",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument(
        "--views",
        type=parse_views,
        default=None,
        help=f"comma-separated yaw[:pitch] in degrees; write --views=-30,0,30 when the first is negative (default {default})",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="normal", help="what the pixels show (default normal)"
    )
    parser.add_argument(
        "--size", type=_size, default=224, help=f"image height and width, 8 to {MAX_SIZE} (default 224)"
    )
    parser.add_argument(
        "--crop-radius", type=lambda t: _length(t, zero=True), default=90.0,
        help="crop around the nose tip, mm; 0 = none",
    )  # fmt: skip
    parser.add_argument("--align", action="store_true", help="PCA pose alignment before rendering")
    add_facing_argument(parser)
    parser.add_argument(
        "--no-normalize", action="store_true", help="render the scan as stored (window: --extent)"
    )
    parser.add_argument("--extent", type=_length, default=None, help="half-width of the image in scan units")
    parser.add_argument(
        "--point-radius", type=lambda t: _length(t, zero=True), default=None,
        help="splat radius in pixels for point clouds, at most --size",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    parser.set_defaults(func=run)
    return parser


def _frames(paths: list[Path], workdir: Path) -> tuple[list[Path] | None, str]:
    """(the frames of a sequence, or None for one scan; the output file stem). A zip's frames are extracted
    into `workdir` under the default caps (`ZipLimits`)."""
    from .types import InputError

    if len(paths) == 1 and paths[0].is_dir():
        return collect_frames(paths[0]), paths[0].resolve().name
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        if not paths[0].is_file():
            raise InputError(f"{paths[0].name}: no such file")
        return extract_frames(paths[0], workdir), paths[0].stem
    if len(paths) > 1:
        refuse_archives(paths)
        return paths, paths[0].stem + "_seq"
    return None, paths[0].stem


def _check_options(args: argparse.Namespace) -> None:
    """Refuse, before any rendering, an --out that cannot be a folder, a --point-radius over --size and a device
    this machine lacks (`resolve_device`)."""
    from ..precision import resolve_device
    from .types import InputError

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: is a file; give a folder (created if missing)")
    existing = next(p for p in (args.out, *args.out.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"--out {args.out}: cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise InputError(f"--out {args.out}: {existing} is not writable")
    if args.point_radius is not None and args.point_radius > args.size:
        raise InputError(f"--point-radius {args.point_radius:g} is more than --size {args.size}")
    if args.device is not None:
        args.device = resolve_device(args.device)


def _render(args: argparse.Namespace, scans: list, sequence: bool):
    """(V, H, W, 3) uint8 views or dynamic images: through the scan recipe (normalised once), or as stored."""
    from .recipe import ScanRecipe
    from .render import DEFAULT_EXTENT, render_views
    from .sequence import render_sequence

    render_kw = {"point_radius": args.point_radius, "device": args.device}
    if args.extent is not None:
        render_kw["extent"] = args.extent
    if args.no_normalize:  # a raw face in millimetres: a 110 mm window about the origin
        render_kw = {"extent": DEFAULT_EXTENT * 100.0, **render_kw, "pivot": (0.0, 0.0, 0.0)}
        if sequence:
            return render_sequence(scans, args.views, args.size, args.mode, normalize=False, **render_kw)
        return render_views(scans[0], args.views, args.size, args.mode, **render_kw)[0]
    recipe = ScanRecipe(
        views=args.views, size=args.size, mode=args.mode, crop_radius=args.crop_radius or None,
        align=args.align, frames=len(scans), orient=args.facing,
    )  # fmt: skip
    if sequence:
        return recipe.dynamic_images(scans, **render_kw).cpu().numpy()
    return recipe.views_of(scans, **render_kw)[0].cpu().numpy()


def run(args: argparse.Namespace) -> int:
    """Render what `args` names; 0 on success, 2 (with a one-line message) when it cannot be done."""
    from PIL import Image

    from .io import load_scan
    from .render import DEFAULT_VIEWS
    from .types import InputError

    paths = [Path(p) for p in args.scans]
    names = _view_names(args.views or list(DEFAULT_VIEWS))
    try:
        _check_options(args)
        with tempfile.TemporaryDirectory(prefix="affectvlm-render-") as tmp:
            frames, stem = _frames(paths, Path(tmp))
            if frames is not None and not frames:
                raise InputError(f"no scan files in {paths[0].name}")
            scans = [load_scan(p) for p in (frames or paths[:1])]
        images = _render(args, scans, sequence=frames is not None)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--out {args.out}: cannot make the folder ({err.strerror or err})") from None
    except InputError as exc:
        _say(f"error: {exc}", err=True)
        return 2
    suffix = "_dynamic" if frames is not None else ""
    if frames is not None:
        _say(f"{len(scans)} frames -> {len(names)} dynamic images")
    for name, image in zip(names, images):
        out = args.out / f"{stem}{suffix}_{name}.png"
        Image.fromarray(image).save(out)
        _say(str(out))
    return 0
