"""Score a model on a face model and expression recipes that no training used: MakeHuman heads posed with
FACSHuman's emotion targets.

    git clone https://github.com/makehumancommunity/makehuman     # assets CC0
    git clone https://github.com/montybot/FACSHuman                # LGPL-3.0
    python train/facshuman.py --makehuman makehuman --facshuman FACSHuman \
        --model checkpoints/affectvlm-cpu --out docs/results/facshuman-affectvlm-cpu.json

MakeHuman is a parametric human: a base mesh (hm08: decimetres, y up, looking along +z) and targets, per-vertex
offsets in text files (`index dx dy dz`). FACSHuman (Gilbert, Demarchi & Urdapilleta 2021, Behavior Research
Methods) adds targets made with the Facial Action Coding System: action units, and emotions built from them, its
own and Langner's (the Radboud Faces Database's prototypes). Neither is in this repository; the default model's
last two stages trained on exported heads and sequences (docs/RESULTS.md, "Stage 8", "Stage 9"). `--export` writes heads as a BU-3DFE folder, and
with `--sequences` as a BU-4DFE folder, for a training run to use (docs/training.md).

Each identity mixes MakeHuman's ethnic, sex and age targets and four head-shape targets at random; each scan is
its head (the body's triangles around the face, and the eyeballs: what a face scanner sees, with the insides of
the mouth and lips that a character mesh carries) in millimetres, neutral or with one emotion target at a
strength, scored through the predictor (the library's door: normalise, render, model) against the six emotions
and neutral. With `--sequences`, each identity's emotions are 4D sequences instead (8 frames from neutral to the
strength and back, `RAMP`), scored as dynamic images. The report: accuracy over everything, on the emotions alone
(six labels), per recipe and strength, neutral recall, and the confusion matrix (also drawn beside `--out`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm.data.aus import BASIC_LABELS, NEUTRAL  # noqa: E402
from affectvlm.scan import Scan  # noqa: E402

EMOTION_TARGETS: dict[str, tuple[str, ...]] = {  # FACSHuman's "00 Emotions" for the six labels, own and Langner's
    "anger": ("01_Anger", "01_Langner_Angry"),
    "disgust": ("03_Disgust", "03_Disgust_a", "03_Langner_Disgusted"),
    "fear": ("05_Fear", "05_Langner_Fearfull"),
    "happiness": ("06_Happy", "06_Langner_Happy"),
    "sadness": ("07_Sadness", "07_Langner_Sadness"),
    "surprise": ("08_Surprise", "08_Langner_Surprised"),
}
FAMILIES = ("all", "own", "langner")  # which of each label's recipes: FACSHuman's own, Langner's, or both
HEAD_SHAPES = tuple(
    f"head/head-{name}"
    for name in (
        "oval round square triangular fat-incr fat-decr scale-depth-incr scale-depth-decr scale-horiz-incr "
        "scale-horiz-decr scale-vert-incr scale-vert-decr age-incr"
    ).split()
)
ETHNIC, SEXES, AGES = ("african", "asian", "caucasian"), ("female", "male"), ("young", "old")
EYES = ("helper-l-eye", "helper-r-eye")
MM_PER_UNIT = 100.0  # MakeHuman's unit is the decimetre
RAMP = np.sin(np.pi * np.arange(8) / 7)  # a sequence's strengths, as a fraction of its apex: neutral, apex, neutral


class MakeHumanError(ValueError):
    """A MakeHuman or FACSHuman folder without the files this script reads."""


def read_obj_groups(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An OBJ's vertices (N, 3), triangles (F, 3; polygons fanned) and each triangle's group name (F,)."""
    vertices, triangles, groups, group = [], [], [], ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("g "):
                group = line.split(maxsplit=1)[1].strip()
            elif line.startswith("f "):
                corner = [int(p.split("/")[0]) - 1 for p in line.split()[1:]]
                triangles += [(corner[0], corner[k], corner[k + 1]) for k in range(1, len(corner) - 1)]
                groups += [group] * (len(corner) - 2)
    return np.asarray(vertices, dtype=np.float64), np.asarray(triangles, dtype=np.int64), np.asarray(groups)


def read_target(path: Path, num_vertices: int) -> np.ndarray:
    """A MakeHuman `.target` file (lines `index dx dy dz`, `#` comments) as (num_vertices, 3) offsets."""
    offsets = np.zeros((num_vertices, 3))
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("#")[0].split()
        if len(parts) == 4:
            offsets[int(parts[0])] = [float(x) for x in parts[1:]]
    return offsets


class Heads:
    """MakeHuman heads posed with FACSHuman's emotion targets (see the module's docstring)."""

    def __init__(self, makehuman: Path, facshuman: Path):
        self.data = _data_folder(Path(makehuman))
        self.emotions = _emotions_folder(Path(facshuman))
        self.vertices, self.triangles, self.groups = read_obj_groups(self.data / "3dobjs" / "base.obj")
        self._targets: dict[Path, np.ndarray] = {}
        self.keep = self._head_triangles()

    def target(self, path: Path) -> np.ndarray:
        if path not in self._targets:
            self._targets[path] = read_target(path, len(self.vertices))
        return self._targets[path]

    def emotion(self, recipe: str) -> np.ndarray:
        return self.target(self.emotions / f"{recipe}.target")

    def identity(self, rng: np.random.Generator) -> np.ndarray:
        """Offsets of a random identity: a mix of the ethnic x sex x age targets, and four head shapes (of those
        the MakeHuman folder has: without any, every identity is the base mesh)."""
        return self.person(rng)[0]

    def person(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """`identity`'s offsets (the same draws), and the person's traits: the larger sex and ethnic weights."""
        offsets = np.zeros_like(self.vertices)
        ethnic, male, old = rng.dirichlet(np.ones(3)), rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.6)
        traits = {"male": bool(male > 0.5), "ethnic": ETHNIC[int(np.argmax(ethnic))]}
        for e, we in zip(ETHNIC, ethnic):
            for sex, ws in zip(SEXES, (1.0 - male, male)):
                for age, wa in zip(AGES, (1.0 - old, old)):
                    path = self.data / "targets" / "macrodetails" / f"{e}-{sex}-{age}.target"
                    offsets += we * ws * wa * self.target(path) if path.is_file() else 0.0
        for shape in rng.choice(HEAD_SHAPES, 4, replace=False):
            path = self.data / "targets" / f"{shape}.target"
            offsets += rng.uniform(0.0, 0.7) * self.target(path) if path.is_file() else 0.0
        return offsets, traits

    def _head_triangles(self) -> np.ndarray:
        """The triangles a face scanner would see: the body's around the face (down to below the chin, back to
        about the ears, out to them sideways: margins of half, 0.6 and 0.6 of the height that the emotion targets
        move), and the eyes. The height is the 5th to 100th percentile of the moved vertices' (FACSHuman's fear and
        surprise move 94 vertices of the neck too, 3 % of those moved: with them, down to the chest and out to the
        upper arms, a bust 600 mm across until stop 58)."""
        moved = np.zeros(len(self.vertices), dtype=bool)
        for recipes in EMOTION_TARGETS.values():
            moved |= np.abs(self.emotion(recipes[0])).sum(1) > 0
        if not moved.any():
            raise MakeHumanError("the FACSHuman emotion targets move no vertex of the MakeHuman base mesh")
        low, high = np.percentile(self.vertices[moved], 5, axis=0), self.vertices[moved].max(0)
        span, middle = high[1] - low[1], np.median(self.vertices[moved, 0])
        corners = self.vertices[self.triangles]
        face = (
            (corners[:, :, 1].min(1) > low[1] - 0.5 * span)
            & (corners[:, :, 2].min(1) > low[2] - 0.6 * span)
            & (np.abs(corners[:, :, 0] - middle).max(1) < 0.6 * span)
        )
        return (self.groups == "body") & face | np.isin(self.groups, EYES)

    def scan(self, identity: np.ndarray, recipe: str | None = None, strength: float = 0.0) -> Scan:
        """The head of `identity` with `recipe` at `strength` (neutral without one), in millimetres."""
        v = self.vertices + identity + (strength * self.emotion(recipe) if recipe else 0.0)
        faces = self.triangles[self.keep]
        used = np.unique(faces)
        index = np.full(len(v), -1, dtype=np.int64)
        index[used] = np.arange(len(used))
        return Scan((v[used] * MM_PER_UNIT).astype(np.float32), index[faces])

    def sequence(self, identity: np.ndarray, recipe: str, strength: float) -> list[Scan]:
        """8 frames of `identity` with `recipe` rising to `strength` and falling back to neutral (`RAMP`)."""
        return [self.scan(identity, recipe, strength * a) for a in RAMP]


def _data_folder(root: Path) -> Path:
    for folder in (root, root / "data", root / "makehuman" / "data"):
        if (folder / "3dobjs" / "base.obj").is_file():
            return folder
    raise MakeHumanError(f"no MakeHuman data folder (3dobjs/base.obj) in {root.name or root}")


def _emotions_folder(root: Path) -> Path:
    for folder in (root, root / "00 Emotions", root / "FACSHuman" / "00 Emotions"):
        if (folder / "01_Anger.target").is_file():
            missing = [r for rs in EMOTION_TARGETS.values() for r in rs if not (folder / f"{r}.target").is_file()]
            if missing:
                raise MakeHumanError(f"FACSHuman's emotion targets lack {', '.join(missing)} (.target)")
            return folder
    raise MakeHumanError(f"no FACSHuman emotion targets (00 Emotions/01_Anger.target, ...) in {root.name or root}")


def recipes_of(label: str, family: str = "all") -> tuple[str, ...]:
    """A label's emotion targets of one family (`FAMILIES`): Langner's prototypes, FACSHuman's own, or both."""
    if family not in FAMILIES:
        raise ValueError(f"unknown recipe family {family!r}; expected one of {FAMILIES}")
    recipes = EMOTION_TARGETS[label]
    return recipes if family == "all" else tuple(r for r in recipes if ("Langner" in r) == (family == "langner"))


def samples(levels: list[float], sequences: bool = False, family: str = "all") -> list[tuple[str, str | None, float]]:
    """(label, recipe, strength) of one identity's scans: neutral (not as a sequence), then every recipe of the
    family at every strength."""
    rows: list[tuple[str, str | None, float]] = [] if sequences else [(NEUTRAL, None, 0.0)]
    for label in EMOTION_TARGETS:
        rows += [(label, recipe, level) for recipe in recipes_of(label, family) for level in levels]
    return rows


def _people(heads: Heads, subjects: int, rng: np.random.Generator, digits: int):
    """(subject index, identity, traits, name) of each exported identity: `F0001`-style names (`digits` wide) whose
    sex comes from the identity's traits, as BU-3DFE and BU-4DFE name their subjects."""
    for subject in tqdm(range(subjects), desc="MakeHuman heads", unit="identity"):
        identity, traits = heads.person(rng)
        yield subject, identity, traits, f"{'M' if traits['male'] else 'F'}{subject + 1:0{digits}d}"


def export(heads: Heads, out: Path, subjects: int, seed: int, levels: list[float], family: str = "own",
           realism: str = "off") -> int:
    """Write each identity's heads as a BU-3DFE folder (`<out>/F0001/F0001_AN01BL_F3D.wrl`, ...) that
    `python -m affectvlm.data prepare --dataset bu3dfe` reads: one neutral scan and, for each emotion, one scan
    at each strength (intensities 01-04, weakest first), its recipe drawn from the family. Sex and ethnicity
    codes are the identity's larger weights; `realism` is a `--realism` preset of `affectvlm.data`, applied to
    every scan (its holes at random places only: the heads carry no landmarks for the eyes, nostrils and mouth).
    Returns the number of scans written."""
    from affectvlm.data.datasets import BU3DFE_EXPRESSIONS
    from affectvlm.data.realism import apply_realism
    from affectvlm.data.synth import realism_preset
    from affectvlm.scan.writers import write_wrl

    if not 1 <= len(levels) <= 4:
        raise ValueError("BU-3DFE has four intensities: give one to four strengths")
    code = {label: c for c, label in BU3DFE_EXPRESSIONS.items()}
    race = {"african": "BL", "asian": "AE", "caucasian": "WH"}
    config, rng, written = realism_preset(realism), np.random.default_rng(seed), 0
    rows = [(NEUTRAL, 0.0, 0)] + [(label, level, k + 1) for label in EMOTION_TARGETS for k, level in enumerate(levels)]
    for _, identity, traits, name in _people(heads, subjects, rng, 4):
        (out / name).mkdir(parents=True, exist_ok=True)
        for label, level, k in rows:
            recipe = rng.choice(recipes_of(label, family)) if label != NEUTRAL else None
            scan = heads.scan(identity, recipe, level)
            if config is not None:
                scan, _ = apply_realism(scan, rng, config)
            write_wrl(out / name / f"{name}_{code[label]}{k:02d}{race[traits['ethnic']]}_F3D.wrl", scan)
            written += 1
    return written


def export_sequences(heads: Heads, out: Path, subjects: int, seed: int, strength: float = 1.0,
                     family: str = "own", realism: str = "off") -> int:
    """Write each identity's emotions as 4D sequences in a BU-4DFE folder (`<out>/F001/Happy/000.wrl` ... `007.wrl`)
    that `python -m affectvlm.data prepare --dataset bu4dfe` reads: 8 frames from neutral to `strength` and back
    (`RAMP`), one sequence an emotion, its recipe drawn from the family. `realism` as in `export`, drawn once a
    sequence as SynthFER-3D draws it (`affectvlm.data.synth.take_realism`: holes stay put, one file frame a take).
    Returns the number of sequences written."""
    from affectvlm.data.datasets import BU4DFE_EXPRESSIONS
    from affectvlm.data.synth import realism_preset, take_realism
    from affectvlm.scan.writers import write_wrl

    folder_of = {label: name for name, label in BU4DFE_EXPRESSIONS.items()}
    config, rng, written = realism_preset(realism), np.random.default_rng(seed), 0
    for subject, identity, _, name in _people(heads, subjects, rng, 3):
        for e, label in enumerate(EMOTION_TARGETS):
            recipe = rng.choice(recipes_of(label, family))
            frames = heads.sequence(identity, recipe, strength)
            if config is not None:
                frames, _ = take_realism(frames, config, [seed, subject, e], {})
            folder = out / name / folder_of[label]
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(frames):
                write_wrl(folder / f"{t:03d}.wrl", frame)
            written += 1
    return written


def score(heads: Heads, predictor, subjects: int, seed: int, levels: list[float], sequences: bool = False,
          family: str = "all") -> list:
    """Every identity's scans (or sequences: 8 frames, `RAMP` times the strength) scored against the six emotions
    and neutral: one record a scan."""
    labels, rng, records = [NEUTRAL, *BASIC_LABELS], np.random.default_rng(seed), []
    plan = samples(levels, sequences, family)
    with tqdm(total=subjects * len(plan), desc="MakeHuman heads", unit="sequence" if sequences else "scan") as bar:
        for subject in range(subjects):
            identity = heads.identity(rng)
            for label, recipe, level in plan:
                if sequences:
                    scores = predictor(sequence=heads.sequence(identity, recipe, level), labels=labels).scores()
                else:
                    scores = predictor(scan=heads.scan(identity, recipe, level), labels=labels).scores()
                six = {k: v for k, v in scores.items() if k != NEUTRAL}
                records.append(dict(subject=subject, label=label, recipe=recipe, strength=level, scores=scores,
                                    top=max(scores, key=scores.get), top_six=max(six, key=six.get)))
                bar.update()
    return records


def report(records: list[dict]) -> dict:
    """Accuracy over everything, on the emotions (six labels), per recipe and strength; neutral recall; the
    confusion matrix (rows: truth, columns: answer; the seven labels)."""
    labels = [NEUTRAL, *BASIC_LABELS]
    emotions = [r for r in records if r["label"] != NEUTRAL]
    neutral = [r for r in records if r["label"] == NEUTRAL]
    right = lambda rs, key="top": float(np.mean([r[key] == r["label"] for r in rs])) if rs else None  # noqa: E731
    groups, levels = defaultdict(list), defaultdict(list)
    for r in emotions:
        groups[f"{r['recipe']} @ {r['strength']:g}"].append(r)
        levels[f"{r['strength']:g}"].append(r)
    counts = Counter((r["label"], r["top"]) for r in records)
    return {
        "n": len(records),
        "accuracy": right(records),
        "emotions_six_labels": right(emotions, "top_six"),
        "emotions_seven_labels": right(emotions),
        "neutral_recall": right(neutral),
        "per_strength": {k: right(v, "top_six") for k, v in sorted(levels.items())},
        "per_recipe": {k: {"six_labels": right(v, "top_six"), "answers": dict(Counter(r["top"] for r in v))}
                       for k, v in sorted(groups.items())},
        "confusion_matrix": {"labels": labels, "counts": [[counts[(t, p)] for p in labels] for t in labels]},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python train/facshuman.py",
        description="Score a model on MakeHuman heads posed with FACSHuman's emotion targets: a face model and "
        "expression recipes no training used (cross-face-model generalisation). Prints a summary; --out writes "
        "the report (JSON) and its confusion matrix (PNG).",
    )
    p.add_argument("--makehuman", required=True, help="a clone of makehumancommunity/makehuman, or its data folder")
    p.add_argument("--facshuman", required=True, help="a clone of montybot/FACSHuman, or its '00 Emotions' folder")
    p.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped default)")
    p.add_argument("--subjects", type=int, default=20, help="random identities (default 20)")
    p.add_argument("--seed", type=int, default=11, help="seed of the identities (default 11)")
    p.add_argument("--levels", type=float, nargs="+", default=None,
                   help="strengths of each emotion target (default 0.3 0.6 1.0; with --sequences 1.0)")
    p.add_argument("--sequences", action="store_true",
                   help="score 4D sequences instead (8 frames: neutral, the emotion rising to each strength and "
                   "falling back; no neutral sequences); default strength 1.0. With --export: write sequences")
    p.add_argument("--recipes", choices=FAMILIES, default=None,
                   help="which emotion targets: FACSHuman's own, Langner's prototypes, or all (default: all when "
                   "scoring, own with --export)")
    p.add_argument("--out", default=None, help="report path (.json); the confusion matrix beside it (.png)")
    g = p.add_argument_group("writing heads to train on (nothing is scored)")
    g.add_argument("--export", metavar="DIR", default=None,
                   help="write the heads as a BU-3DFE folder for `python -m affectvlm.data prepare --dataset "
                   "bu3dfe --root DIR`: a neutral scan and each emotion at four strengths (default 0.25 0.5 0.75 "
                   "1.0) an identity; with --sequences a BU-4DFE folder (--dataset bu4dfe): one 8-frame sequence "
                   "an emotion, at one strength (default 1.0); give a --seed other than the scored identities'")
    g.add_argument("--realism", default="off", choices=["off", "on", "surface", "sampled"],
                   help="scanner realism on every written scan, as `affectvlm.data prepare --realism` (default off)")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subjects < 1:
        parser.error("--subjects must be at least 1")
    if args.export and args.model:
        parser.error("--export writes heads and scores nothing: leave out --model")
    if args.export and args.sequences and args.levels and len(args.levels) != 1:
        parser.error("--export --sequences writes one sequence an emotion: give one strength (--levels 1.0)")
    from affectvlm import AffectVLMPredictor

    try:
        heads = Heads(Path(args.makehuman), Path(args.facshuman))
        if args.export and args.sequences:
            n = export_sequences(heads, Path(args.export), args.subjects, args.seed, (args.levels or [1.0])[0],
                                 args.recipes or "own", args.realism)
            print(f"{n} sequences of {args.subjects} identities written to {args.export} (a BU-4DFE folder)")
            return {"sequences": n}
        if args.export:
            levels = args.levels or [0.25, 0.5, 0.75, 1.0]
            n = export(heads, Path(args.export), args.subjects, args.seed, levels, args.recipes or "own", args.realism)
            print(f"{n} scans of {args.subjects} identities written to {args.export} (a BU-3DFE folder)")
            return {"scans": n}
        predictor = AffectVLMPredictor.from_pretrained(*([args.model] if args.model else []))
    except (MakeHumanError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    levels, family = args.levels or ([1.0] if args.sequences else [0.3, 0.6, 1.0]), args.recipes or "all"
    result = report(score(heads, predictor, args.subjects, args.seed, levels, args.sequences, family))
    kind = "4d" if args.sequences else "3d"
    result.update(model=args.model or "default", kind=kind, subjects=args.subjects, seed=args.seed, levels=levels,
                  recipes=family)
    print(summary(result))
    if args.out:
        _write(result, Path(args.out))
    return result


def summary(r: dict) -> str:
    strengths = ", ".join(f"{k}: {v:.3f}" for k, v in r["per_strength"].items())
    neutral = "" if r["neutral_recall"] is None else f"; neutral recall {r['neutral_recall']:.3f}"
    what = "sequences" if r.get("kind") == "4d" else "scans"
    return (f"{r['n']} {what}: accuracy {r['accuracy']:.3f}; emotions {r['emotions_six_labels']:.3f} (six labels; "
            f"by strength {strengths}){neutral}")


def _write(result: dict, out: Path) -> None:
    from train.cross_validate import plot_confusion

    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    cm = result["confusion_matrix"]
    title = f"{Path(str(result['model'])).name} on MakeHuman + FACSHuman: accuracy {result['accuracy']:.3f}"
    plot_confusion(cm["counts"], cm["labels"], title, png)
    out.write_text(json.dumps(dict(result, confusion_png=png.name), indent=1) + "\n")


if __name__ == "__main__":
    main()
