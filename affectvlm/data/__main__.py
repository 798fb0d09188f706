"""`python -m affectvlm.data COMMAND ...`: generate SynthFER-3D, render caches, make folds, fetch the face model.

python -m affectvlm.data synth --out /tmp/synth-bu3dfe --layout bu3dfe --subjects 10
python -m affectvlm.data prepare --dataset synth --out /tmp/cache --subjects 100 --kind both
python -m affectvlm.data prepare --dataset synth --out /tmp/cache --face-model both --neutral --realism on
python -m affectvlm.data sheet --out docs/img/synthfer3d_sheet.png   # one row per emotion and face model
python -m affectvlm.data prepare --dataset bu3dfe --root /data/BU-3DFE --out /tmp/cache
python -m affectvlm.data folds --dataset bu3dfe --root /data/BU-3DFE --protocol bu3dfe-subset1 --out folds.json
python -m affectvlm.data sfm            # where the Surrey Face Model is (downloads it when missing)
python -m affectvlm.data sfm-convert ~/Downloads/eos-share --out ~/sfm   # eos files fetched by hand -> npz
python -m affectvlm.data ict --info     # where the ICT FaceKit (MIT) is and what it holds
python -m affectvlm.data ict-convert ~/ICT-FaceKit   # a clone of the kit -> ict_facekit.npz (user cache)
"""

from __future__ import annotations

import argparse
import json
import sys

_DESCRIPTION = """Data for AffectVLM: SynthFER-3D synthetic 3D/4D expression scans, render caches and
subject-independent folds. The Surrey Face Model is found through $AFFECTVLM_SFM_DIR, else the user cache
(~/.cache/affectvlm/sfm), else downloaded there from the eos repository. The model and everything generated
from it are for non-commercial use only (research and teaching). The ICT FaceKit (MIT licence) is found
through $AFFECTVLM_ICT_DIR, else ../shared/ict beside the checkout, else ~/.cache/affectvlm/ict, where
`ict-convert` writes it from a clone of github.com/ICT-VGL/ICT-FaceKit."""


def _synth_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SynthFER-3D")
    g.add_argument(
        "--preset",
        default="medium",
        choices=["easy", "medium", "hard"],
        help="difficulty preset (default: medium)",
    )
    g.add_argument("--seed", type=int, default=0, help="master seed: same seed, same data (default: 0)")
    g.add_argument(
        "--subjects", type=int, default=100, help="number of subjects (default: 100, like BU-3DFE)"
    )
    g.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a SynthConfig field, e.g. --set noise=0.4 --set 'pose_jitter=[10,5,2]' (JSON values)",
    )  # fmt: skip
    g.add_argument(
        "--sfm-dir", default=None, help="folder with the face model (default: $AFFECTVLM_SFM_DIR / cache)"
    )
    g.add_argument(
        "--face-model", default="sfm", choices=["sfm", "ict", "both"],
        help="face model: the Surrey Face Model (non-commercial), the ICT FaceKit (MIT), or both (even subjects "
        "SFM, odd subjects ICT) (default: sfm)",
    )  # fmt: skip
    g.add_argument(
        "--expressions", default="blendshapes", choices=["blendshapes", "aus", "mixed"],
        help="the SFM subjects' expressions: its six whole-emotion blendshapes, facial action units (EMFACS "
        "prototypes and variants), or mixed (half the SFM subjects each); ICT subjects always use action units "
        "(default: blendshapes)",
    )  # fmt: skip
    g.add_argument(
        "--sfm-binding", default="blend", choices=["blend", "transfer"],
        help="how SFM subjects render action units (--expressions aus, compounds): blend its six emotion shapes "
        "(the AUs recorded are nominal), or transfer the ICT FaceKit's AU shapes onto its vertices through a dense "
        "correspondence (needs the ICT FaceKit; real AUs) (default: blend)",
    )  # fmt: skip
    g.add_argument(
        "--ict-binding", default="aus", choices=["aus", "blend"],
        help="how ICT FaceKit subjects render the six emotions: the kit's own action-unit shapes, or the SFM's "
        "six whole-emotion blendshapes carried onto its vertices (needs the SFM too; a held-out recipe for models "
        "trained on AU-built ICT faces) (default: aus)",
    )  # fmt: skip
    g.add_argument(
        "--neutral",
        action="store_true",
        help="neutral as a seventh class in 4D too: one neutral sequence per subject (3D always has its neutral scan)",
    )
    g.add_argument(
        "--compound",
        action="store_true",
        help="add the 15 compound expressions (Du et al. 2014), flagged evaluation_only: one scan and one sequence each per subject",
    )
    g.add_argument(
        "--realism", default="off", choices=["off", "on", "surface", "scene", "sampled"],
        help="scanner realism on every scan and frame: off; on (holes, boundary, density, noise, spikes, point "
        "clouds, turned/z-up/off-centre frames, cm/m/unitless); surface (the first five only); scene (on, and a "
        "neck, shoulders and chest below every face, half of them before a wall); sampled (on, half the point "
        "clouds drawn uniformly over the surface instead of the mesh's vertices) (default: off)",
    )  # fmt: skip
    g.add_argument(
        "--ict-dir",
        default=None,
        help="folder with ict_facekit.npz (default: $AFFECTVLM_ICT_DIR / ../shared/ict / cache)",
    )


def _synth_config(args):
    from .synth import SynthConfig, realism_preset

    overrides = {
        "seed": args.seed, "num_subjects": args.subjects, "face_model": args.face_model,
        "expressions": args.expressions, "sfm_binding": args.sfm_binding, "ict_binding": args.ict_binding,
        "neutral": args.neutral,
        "compound": args.compound,
        "realism": realism_preset(args.realism),
    }  # fmt: skip
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if isinstance(parsed, list):
            parsed = tuple(tuple(x) if isinstance(x, list) else x for x in parsed)
        overrides[name.strip()] = parsed
    return SynthConfig.preset(args.preset, **overrides)


def cmd_synth(args) -> int:
    from .synth import write_synth_tree

    config = _synth_config(args)
    if args.layout == "bosphorus" and config.realism is not None:
        print("--realism with --layout bosphorus: a range grid is the scanner's own frame", file=sys.stderr)
        return 2
    n = write_synth_tree(
        args.out, args.layout, config, args.sfm_dir, num_frames=args.frames or None, texture_size=args.texture_size,
        ict=args.ict_dir,
    )  # fmt: skip
    print(f"wrote {n} scan files in the {args.layout} layout under {args.out}")
    return 0


def _synth_only_given(args) -> list[str]:
    """The SynthFER-3D options (and --kind) that `args` sets to other values than their defaults."""
    p = argparse.ArgumentParser(add_help=False)
    _synth_args(p)
    defaults = {**vars(p.parse_args([])), "kind": "both"}
    return [f"--{name.replace('_', '-')}" for name, value in defaults.items() if getattr(args, name) != value]


def _prepare_problem(args) -> str | None:
    """Why the `prepare` arguments cannot be run as given (options of the other kind of dataset), or None."""
    if args.dataset == "synth":
        if args.root or args.protocol:
            return (
                "--dataset synth generates scans in memory and takes no --root or --protocol; to render a tree "
                "written by `synth --layout L`, use --dataset L --root TREE"
            )
        return None
    if not args.root:
        return f"--root is required for --dataset {args.dataset}"
    if given := _synth_only_given(args):
        return f"{', '.join(given)}: for --dataset synth only ({args.dataset} is read from --root as it is)"
    return None


def cmd_prepare(args) -> int:
    from .cache import RenderSettings, prepare_cache

    try:
        views = json.loads(args.views) if args.views else None
        settings = RenderSettings(
            views=views, size=args.size, mode=args.mode, crop_radius=None if args.crop_radius <= 0 else args.crop_radius,
            align=args.align, frames=args.frames, batch=args.batch,
        )  # fmt: skip
    except ValueError as err:  # bad JSON in --views, a size or frame count out of range
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problem := _prepare_problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    samples = notes = None
    if args.dataset != "synth":
        from .datasets import read_dataset, select_protocol

        samples = read_dataset(args.dataset, args.root)
        notes = samples.issues
        if args.protocol:
            samples = select_protocol(samples, args.protocol)
    folder = prepare_cache(
        args.dataset, args.root, args.out, settings, samples=samples, selection=args.protocol, notes=notes,
        synth_config=_synth_config(args) if args.dataset == "synth" else None, synth_kind=args.kind,
        sfm_dir=args.sfm_dir, ict_dir=args.ict_dir, shard_size=args.shard_size, workers=args.workers,
        max_shards=args.max_shards,
    )  # fmt: skip
    report = folder / "report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        notes = f", {len(doc['notes'])} notes" if doc.get("notes") else ""
        print(f"cache: {folder} ({doc['rendered']} samples rendered, {len(doc['bad'])} bad{notes}: see {report})")
        counts = doc.get("counts", {})
        for group in ("face_model", "realism"):
            if counts.get(group):
                print(f"  {group}: " + ", ".join(f"{k} {v}" for k, v in counts[group].items()))
    else:
        print(f"cache: {folder} (not finished: run the same command again to resume)")
    return 0


def cmd_sheet(args) -> int:
    """Render the SynthFER-3D contact sheet: one row per label (neutral and the six emotions) and face model, each
    one scan of that model's `--subject`-th subject at the top intensity in the pipeline's three views, then one
    row of scanner realism; the title states the face models' licences (SFM: non-commercial; ICT FaceKit: MIT).
    Look at it: each row should read as its label to a person."""
    from .sheet import write_sheet
    from .synth import SynthFER3D

    gen = SynthFER3D(_synth_config(args), args.sfm_dir, args.ict_dir)
    path = write_sheet(args.out, gen, size=args.size, subject=args.subject, intensity=args.intensity)
    print(f"wrote {path}")
    return 0


def cmd_folds(args) -> int:
    """Folds over the subjects that have samples of `--labels`: of a cache, or of a dataset (a protocol's
    subjects are the ones `prepare --protocol` renders; `--seed` is the partition's)."""
    from .folds import labelled_persons, save_folds, subject_folds

    if not args.cache and not (args.dataset and args.root):
        print("folds needs --cache, or --dataset and --root", file=sys.stderr)
        return 2
    labels = [name.strip() for name in args.labels.split(",") if name.strip()]
    if args.cache:
        from .cache import RenderCacheDataset

        entries = RenderCacheDataset(args.cache).entries
        source = {"cache": args.cache}
    else:
        from .datasets import read_dataset, select_protocol

        samples = read_dataset(args.dataset, args.root)
        if args.protocol:
            samples = select_protocol(samples, args.protocol)  # prepare's selection: its subjects, its seed
        entries = [s.to_dict() for s in samples]
        source = {"dataset": args.dataset, "protocol": args.protocol}
    # SynthFER-3D's F0001 (3D scans) and F001 (4D sequences) are one person: one side of every fold
    persons = labelled_persons(entries, labels)
    try:
        folds = subject_folds(
            sorted(persons), k=args.k, seed=args.seed, repeat=args.repeat, val_fraction=args.val_fraction,
            person=persons.__getitem__,
        )  # fmt: skip
    except ValueError as err:
        print(f"error: {len(persons)} subjects have samples of the labels {labels}: {err}", file=sys.stderr)
        return 1
    save_folds(
        args.out, folds, k=args.k, seed=args.seed, repeat=args.repeat, val_fraction=args.val_fraction,
        labels=labels, **source,
    )  # fmt: skip
    print(f"wrote {len(folds)} folds over {len(persons)} subjects with samples of {labels} to {args.out}")
    return 0


def cmd_sfm(args) -> int:
    """Print where the Surrey Face Model is, downloading the two eos files (sha256-checked) and converting them
    to sfm_3448.npz when missing."""
    from .sfm import download_sfm, find_sfm_dir

    folder = download_sfm(args.dir) if args.download else find_sfm_dir(args.dir)
    print(f"Surrey Face Model: {folder}")
    return 0


def cmd_sfm_convert(args) -> int:
    """Convert the two original eos files (sfm_shape_3448.bin, expression_blendshapes_3448.bin) in SRC into
    sfm_3448.npz, written to --out (default SRC) with the originals copied beside it."""
    from .sfm import convert_sfm

    npz = convert_sfm(args.src, args.out)
    print(f"wrote {npz}; use it with: export AFFECTVLM_SFM_DIR={npz.parent}")
    return 0


def cmd_ict(args) -> int:
    """Print where the ICT FaceKit's ict_facekit.npz is: --dir, else $AFFECTVLM_ICT_DIR (only there when set),
    else ../shared/ict beside the checkout, else the user cache (~/.cache/affectvlm/ict). With --info, load it
    and say what it holds: vertices, triangles, identity modes, expression shapes, landmarks, units (mm once
    loaded; the file stores cm) and the licence (MIT: keep the kit's LICENSE with any copy). Nothing is
    downloaded: build the file with `ict-convert`."""
    from .ict import find_ict, load_ict

    print(load_ict(args.dir).summary() if args.info else f"ICT FaceKit: {find_ict(args.dir)}")
    return 0


def cmd_ict_convert(args) -> int:
    """Build ict_facekit.npz from SRC, a clone of github.com/ICT-VGL/ICT-FaceKit (about 420 MB: `git clone
    --depth 1 https://github.com/ICT-VGL/ICT-FaceKit`) or its FaceXModel/ folder. Reads
    generic_neutral_mesh.obj, identity000.obj ... identity099.obj, the 53 expression OBJs named in
    vertex_indices.json and its 68 landmarks; keeps the face, head/neck and eyeballs (what a scanner sees),
    splits quads into triangles and stores float16 deltas in centimetres (8.8 MiB). Writes it to --out
    (default: the user cache ~/.cache/affectvlm/ict, where it is found without settings) with the kit's
    LICENSE (MIT) beside it."""
    from .ict import convert_ict

    npz = convert_ict(args.src, args.out)
    print(f"wrote {npz}; use it with: export AFFECTVLM_ICT_DIR={npz.parent}")
    return 0


def _friendly(func):
    """Dataset and model errors become one line on stderr and exit code 1, not a traceback."""

    def run(args) -> int:
        from .cache import CacheError
        from .datasets import DatasetError
        from .ict import ICTError
        from .sfm import SFMError

        try:
            return int(func(args) or 0)
        except (DatasetError, SFMError, ICTError, CacheError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m affectvlm.data", description=_DESCRIPTION)
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def add_parser(subparsers) -> None:
    """Register ``data`` (with these commands under it) in the ``python -m affectvlm`` dispatcher."""
    p = subparsers.add_parser(
        "data", help="SynthFER-3D, render caches, folds, the face model", description=_DESCRIPTION
    )
    _add_commands(p.add_subparsers(dest="data_command", metavar="COMMAND"))
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _add_commands(sub) -> None:
    _add_synth(sub)
    _add_prepare(sub)
    _add_sheet(sub)
    _add_folds(sub)
    _add_face_models(sub)


def _add_synth(sub) -> None:
    """`synth`: SynthFER-3D written as files in a real dataset's layout."""
    p = sub.add_parser("synth", help="write SynthFER-3D scans as files in a real dataset's layout",
                       description="Write SynthFER-3D as files laid out like a real dataset, so the readers and the whole pipeline run on them.")  # fmt: skip
    p.add_argument("--out", required=True, help="root folder to write")
    p.add_argument(
        "--layout",
        default="bu3dfe",
        choices=["bu3dfe", "bu4dfe", "bosphorus", "bp4d"],
        help="which dataset's layout (default: bu3dfe)",
    )
    p.add_argument(
        "--frames", type=int, default=12, help="frames per 4D sequence, evenly spread (0: all ~100; large)"
    )
    p.add_argument(
        "--texture-size", type=int, default=32, help="side of the texture images beside the meshes"
    )
    _synth_args(p)
    p.set_defaults(func=_friendly(cmd_synth))


def _add_prepare(sub) -> None:
    """`prepare`: render a dataset into a cache of shards."""
    p = sub.add_parser("prepare", help="render a dataset (or SynthFER-3D directly) into a cache of uint8 shards",
                       description="Render every sample's views once into memory-mapped uint8 shards keyed by a hash of the render "
                       "settings. Resumable: run the same command again after an interruption. Samples that cannot be rendered are "
                       "listed in report.json.")  # fmt: skip
    p.add_argument(
        "--dataset",
        required=True,
        choices=["bu3dfe", "bosphorus", "bu4dfe", "bp4d", "synth"],
        help="dataset to render; synth generates in memory",
    )
    p.add_argument("--root", help="the dataset folder (not for synth)")
    p.add_argument(
        "--out",
        required=True,
        help="parent folder of the cache (the cache is <out>/<dataset>-<settings hash>, "
        "<out>/<dataset>-<protocol>-<settings hash> with --protocol)",
    )
    p.add_argument("--protocol", help="render only a protocol's samples (bu3dfe-subset1, bosphorus-six, ...)")
    p.add_argument(
        "--kind", default="both", choices=["3d", "4d", "both"], help="synth: static scans, sequences or both"
    )
    p.add_argument("--size", type=int, default=224, help="image side (default: 224)")
    p.add_argument("--mode", default="normal", help="render mode of the scan pipeline (default: normal)")
    p.add_argument(
        "--views", help="views as JSON, passed to render_views (default: the pipeline's three views)"
    )
    p.add_argument("--crop-radius", type=float, default=90.0, help="crop about the nose tip in mm (0: none)")
    p.add_argument("--align", action="store_true", help="PCA-align scans before rendering")
    p.add_argument(
        "--frames",
        type=int,
        default=12,
        help="4D: frames evenly sampled per sequence for its dynamic image (default: 12)",
    )
    p.add_argument("--batch", type=int, default=25, help="static scans per render call")
    p.add_argument("--shard-size", type=int, default=250, help="samples per shard, the unit of resumption")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default: 1)")
    p.add_argument(
        "--max-shards", type=int, default=None, help="stop after this many shards (testing resumption)"
    )
    _synth_args(p)
    p.set_defaults(func=_friendly(cmd_prepare))


def _add_sheet(sub) -> None:
    """`sheet`: a contact sheet of SynthFER-3D."""
    p = sub.add_parser(
        "sheet",
        help="a contact sheet PNG of SynthFER-3D: one row per emotion and face model",
        description=cmd_sheet.__doc__,
    )
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--size", type=int, default=128, help="side of each view in pixels (default: 128)")
    p.add_argument(
        "--subject", type=int, default=0, help="which subject of each face model (default: 0, its first)"
    )
    p.add_argument(
        "--intensity", type=int, default=None, help="intensity level of the emotions (default: the top one)"
    )
    _synth_args(p)
    p.set_defaults(func=_friendly(cmd_sheet), face_model="both", subjects=4)


def _add_folds(sub) -> None:
    """`folds`: subject-independent k folds as JSON."""
    from .synth import EMOTIONS

    p = sub.add_parser("folds", help="subject-independent k-fold splits exported to JSON",
                       description="Seeded subject-independent k folds, each with validation subjects carved from its training side.")  # fmt: skip
    p.add_argument("--dataset", help="dataset to read subjects from (with --root)")
    p.add_argument("--root", help="the dataset folder")
    p.add_argument("--cache", help="or: a prepared cache folder to take the subjects from")
    p.add_argument("--protocol", help="restrict to a protocol's subjects, the ones `prepare --protocol` "
                   "renders (e.g. bu3dfe-subset1: 60 subjects)")  # fmt: skip
    p.add_argument("--labels", default=",".join(EMOTIONS),
                   help="the labels the runs train on, comma-separated: subjects without samples of them are "
                   "in no fold, as in training (default: the six emotions; add neutral for the affectvlm-cpu "
                   "config)")  # fmt: skip
    p.add_argument("--k", type=int, default=10, help="number of folds (default: 10)")
    p.add_argument(
        "--seed", type=int, default=0, help="partition seed; never changes which subjects (default: 0)"
    )
    p.add_argument(
        "--repeat", type=int, default=0, help="repetition number: a new random partition per repeat"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="fraction of training subjects held out for validation",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=_friendly(cmd_folds))


def _add_face_models(sub) -> None:
    """`sfm`, `sfm-convert`, `ict`, `ict-convert`: find or build the two face models' files."""
    p = sub.add_parser("sfm", help="locate (or download) the Surrey Face Model", description=cmd_sfm.__doc__)
    p.add_argument("--dir", default=None, help="folder to use or download into")
    p.add_argument(
        "--download", action="store_true", help="download the two eos files (sha256-checked) and convert them"
    )
    p.set_defaults(func=_friendly(cmd_sfm))

    p = sub.add_parser(
        "sfm-convert",
        help="convert the eos model files into sfm_3448.npz",
        description=cmd_sfm_convert.__doc__,
    )
    p.add_argument("src", help="folder holding sfm_shape_3448.bin and expression_blendshapes_3448.bin")
    p.add_argument("--out", default=None, help="folder to write (default: SRC)")
    p.set_defaults(func=_friendly(cmd_sfm_convert))

    p = sub.add_parser(
        "ict", help="locate the ICT FaceKit (MIT); --info: what it holds", description=cmd_ict.__doc__
    )
    p.add_argument("--dir", default=None, help="folder (or ict_facekit.npz) to use instead of the search")
    p.add_argument(
        "--info", action="store_true", help="load it and print vertices, shapes, units and licence"
    )
    p.set_defaults(func=_friendly(cmd_ict))

    p = sub.add_parser(
        "ict-convert",
        help="build ict_facekit.npz from a clone of the ICT FaceKit",
        description=cmd_ict_convert.__doc__,
    )
    p.add_argument("src", help="a clone of github.com/ICT-VGL/ICT-FaceKit, or its FaceXModel/ folder")
    p.add_argument(
        "--out", default=None, help="folder to write (default: the user cache, ~/.cache/affectvlm/ict)"
    )
    p.set_defaults(func=_friendly(cmd_ict_convert))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
