"""How much one scan's shape tells of its expression, given what no scanner gives: the face model's correspondence.

The served model reads three rendered views of a scan whose vertices correspond to nothing. This tool asks how
much of the answer the shape itself holds. It takes SynthFER-3D's faces before the scanner
(`SynthFER3D.shape`: every vertex of the face model, in its own frame and vertex order, so that two identities'
faces correspond vertex by vertex) and fits, for each face model, a softmax regression on the principal
components of the vertex coordinates: identities of one seed to train, held-out identities of other seeds to
score, per intensity level (0: neutral), with the seven labels. It is an oracle, not a recogniser: it
needs the face model's own vertices, so it can read no scan from a scanner.

`--cross` carries the ICT FaceKit's faces onto the SFM's vertices (`SynthFER3D.carried_onto_sfm`, the dense
correspondence the generator's `sfm_binding="transfer"` uses) and also reads each face model's faces with the
oracle trained on the other's: the cross-face-model protocol, asked of the shapes. `--relative` takes each face's
own neutral face away from it, so that what is left is the expression's displacement alone: what the two face
models' expression recipes share, with identity out of the question.

`--train-warp` (mm) bends each training identity by smooth random bumps beyond its face model's identity modes
(`SynthConfig.identity_warp`), so that the regression cannot lean on identities lying in the model's span;
`--test-warp` scores held-out faces bent the same way, as well as unbent ones. docs/RESULTS.md, "How much one
scan's shape tells", has the figures.

    python train/shape_oracle.py --train-seed 100 --train-subjects 600 --test-seed 1 --test-seed 21 \\
        --train-warp 3 --test-warp 3 --out /tmp/oracle.json
    python train/shape_oracle.py --train-warp 3 --cross --relative
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.data.synth import EMOTIONS, SynthConfig, SynthFER3D  # noqa: E402

LABELS = ("neutral", *EMOTIONS)
ICT_STRIDE = 3  # every third ICT FaceKit vertex (3,750 of 11,248): the face's shape with a third of the memory


def shapes(
    seed: int, subjects: int, warp: float = 0.0, progress: bool = True, sfm=None, ict=None, *,
    onto_sfm: bool = False, relative: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Face model -> {"x": (n, 3V) vertex coordinates, "label": (n,) index into LABELS, "level": (n,) 0-4,
    "subject": (n,)}: every subject's neutral face and six emotions at each intensity (the held-out protocol's
    25 scans a subject). `sfm`, `ict`: the face models, loaded (else from their folders, as SynthFER3D finds them).
    `onto_sfm`: the ICT faces carried onto the SFM's vertices (`SynthFER3D.carried_onto_sfm`), so that both face
    models' faces have the same coordinates; `relative`: each face minus its subject's neutral face (identity
    taken out: the expression's displacement alone)."""
    config = SynthConfig(seed=seed, num_subjects=subjects, face_model="both", neutral=True, identity_warp=warp)
    data = SynthFER3D(config, sfm, ict)
    levels = range(1, len(data.config.intensity_levels) + 1)
    rows: dict[str, list] = {}
    for index in tqdm(range(subjects), desc=f"faces of seed {seed}", disable=not progress, unit="subject"):
        model = data.subject(index).face_model
        neutral = None
        for label_index, label in enumerate(LABELS):
            for level in [0] if label == "neutral" else levels:
                v = data.shape(index, label, level)
                if model == "ict":
                    v = data.carried_onto_sfm(v) if onto_sfm else v[::ICT_STRIDE]
                neutral = v if neutral is None else neutral  # LABELS[0] is neutral
                rows.setdefault(model, []).append(((v - neutral if relative else v).reshape(-1), label_index, level, index))
    return {
        model: {key: np.stack([r[i] for r in found]) for i, key in enumerate(("x", "label", "level", "subject"))}
        for model, found in rows.items()
    }


C_CHOICES = (1.0, 10.0, 100.0, 1000.0)  # the L2 penalty's inverse, chosen on held-back training identities


class ShapeOracle:
    """Principal components of the training faces' coordinates (scaled as one), then a softmax regression with an
    L2 penalty of 1 / (2 C) per weight against the summed log-loss (scikit-learn's form). `fit` with `groups`
    chooses C among `C_CHOICES` on a fifth of the training identities held back, then fits on all."""

    def __init__(self, components: int = 300, c: float = 1.0):
        self.components, self.c = components, c

    def features(self, x: np.ndarray) -> torch.Tensor:
        z = (torch.from_numpy(x).double() - self.mean) @ self.basis
        return (z - self.z_mean) / self.z_scale

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> ShapeOracle:
        if groups is not None:
            held = np.isin(groups, np.unique(groups)[::5])
            accuracy = {
                c: float((ShapeOracle(self.components, c).fit(x[~held], y[~held]).predict(x[held]) == y[held]).mean())
                for c in C_CHOICES
            }
            self.c, self.choice = max(accuracy, key=accuracy.get), accuracy
        torch.manual_seed(0)
        data = torch.from_numpy(x).double()
        self.mean = data.mean(0)
        k = min(self.components, len(x) - 1)
        self.basis = torch.pca_lowrank(data - self.mean, q=k, center=False, niter=6)[2][:, :k]
        z = (data - self.mean) @ self.basis
        # one scale for every component (the coordinates' own geometry): each component's own standard deviation
        # would blow the faint ones up, and a face off the training span would be read by its noise
        self.z_mean, self.z_scale = z.mean(0), z.std(0).max().clamp_min(1e-12)
        self._regress((z - self.z_mean) / self.z_scale, torch.from_numpy(y).long())
        return self

    def _regress(self, z: torch.Tensor, target: torch.Tensor) -> None:
        self.w = torch.zeros(z.shape[1], len(LABELS), dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(len(LABELS), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [self.w, self.b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
        )

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ self.w + self.b, target, reduction="sum")
            loss = loss + (self.w**2).sum() / (2 * self.c)
            loss.backward()
            return loss

        optimizer.step(closure)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.features(x) @ self.w + self.b).argmax(1).numpy()


def scores(right: np.ndarray, level: np.ndarray, label: np.ndarray) -> dict:
    """Accuracy over everything and at each level; neutral recall is level 0's."""
    out = {"accuracy": round(float(right.mean()), 4), "n": int(len(right))}
    out.update({f"level_{lv}": round(float(right[level == lv].mean()), 4) for lv in np.unique(level)})
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )  # fmt: skip
    parser.add_argument("--train-seed", type=int, default=100, help="seed of the training identities (default 100)")
    parser.add_argument("--train-subjects", type=int, default=600, help="training identities (default 600)")
    parser.add_argument("--train-warp", type=float, default=0.0, help="mm of bending beyond the face models' span")
    parser.add_argument("--test-seed", type=int, action="append", help="held-out seed (repeatable; default 1)")
    parser.add_argument("--test-subjects", type=int, default=40, help="held-out identities a seed (default 40)")
    parser.add_argument("--test-warp", type=float, default=0.0, help="also score the held-out faces bent this much")
    parser.add_argument(
        "--cross", action="store_true",
        help="carry the ICT faces onto the SFM's vertices and also read each face model's faces with the other's oracle",
    )  # fmt: skip
    parser.add_argument(
        "--relative", action="store_true", help="each face minus its subject's neutral face (identity taken out)"
    )
    parser.add_argument("--components", type=int, default=300, help="principal components (default 300)")
    parser.add_argument("--out", help="write the report here (JSON)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    form = {"onto_sfm": args.cross, "relative": args.relative}
    train = shapes(args.train_seed, args.train_subjects, args.train_warp, **form)
    oracles = {m: ShapeOracle(args.components).fit(d["x"], d["label"], d["subject"]) for m, d in train.items()}
    report = {
        "train": {"seed": args.train_seed, "subjects": args.train_subjects, "warp_mm": args.train_warp, **form},
        "c": {m: {"chosen": o.c, "held_back_accuracy": o.choice} for m, o in oracles.items()},
    }
    for seed in args.test_seed or [1]:
        for warp in sorted({0.0, args.test_warp}):
            test = shapes(seed, args.test_subjects, warp, **form)
            name = f"seed {seed}" + (f", bent {warp:g} mm" if warp else "")
            for trained, model in [(m, m) for m in test] + ([("sfm", "ict"), ("ict", "sfm")] if args.cross else []):
                d = test[model]
                key = f"{name}, {model}" + (f" read by the {trained} oracle" if trained != model else "")
                report[key] = scores(oracles[trained].predict(d["x"]) == d["label"], d["level"], d["label"])
                print(f"{key:44s}: " + ", ".join(f"{k} {v}" for k, v in report[key].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
