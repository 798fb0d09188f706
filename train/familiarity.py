"""Fit a checkpoint's familiarity floor: below it, a scan is noted as looking like none of the faces it learnt from.

A scan's familiarity (`affectvlm.predictor.Prediction.familiarity`) is the cosine similarity between its fused
embedding and the nearest of the model's own labels. Faces making the expressions a model was trained on lie near
one of them; shapes that pass the scan door's face tests but are no face (a box held corner first, a cylinder's
point cloud, an office scene) lie far from all, and so do the faces the model reads worst. This tool scores
synthetic scans of validation identities (never the test ones: a seed no training or held-out set uses; scanner
realism on, both face models, neutral and every emotion at every intensity) through the predictor, as a user's scan
is scored, and writes the `--percentile`-th percentile of their familiarity into a copy of the checkpoint as
`config.familiarity_floor`. It prints how many of those scans fall under the floor and how often the model is right
on them and on the rest.

    python train/familiarity.py --model checkpoints/affectvlm-cpu --out /tmp/floored --seed 13 --subjects 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm.data.aus import BASIC_LABELS, NEUTRAL  # noqa: E402

DEFAULT_PERCENTILE = 5.0


def validation_scans(seed: int, subjects: int, neutral: bool = True):
    """(label, scan) of `subjects` synthetic identities of `seed`: both face models, scanner realism, neutral (for a
    model that has the label) and the six emotions at intensities 1-4."""
    from affectvlm.data.realism import RealismConfig
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    data = SynthFER3D(
        SynthConfig(seed=seed, num_subjects=subjects, face_model="both", neutral=True, realism=RealismConfig())
    )
    for subject in range(subjects):
        if neutral:
            yield NEUTRAL, data.scan(subject, NEUTRAL)
        for label in BASIC_LABELS:
            for level in range(1, len(data.config.intensity_levels) + 1):
                yield label, data.scan(subject, label, level)


def measure(predictor, seed: int, subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """(familiarity, right) of each validation scan the predictor reads (refused scans are left out)."""
    familiar, right = [], []
    neutral = NEUTRAL in predictor.default_labels
    scans = validation_scans(seed, subjects, neutral)
    total = subjects * (neutral + len(BASIC_LABELS) * 4)
    for label, scan in tqdm(scans, total=total, desc="validation scans", unit="scan"):
        try:
            result = predictor(scan=scan.to_scan())
        except ValueError:  # a scan with next to nothing in view: refused, as a user's would be
            continue
        familiar.append(result.familiarity)
        right.append(result.label == label)
    return np.asarray(familiar), np.asarray(right)


def floor_report(familiar: np.ndarray, right: np.ndarray, floor: float) -> dict:
    """How many scans fall under `floor`, and the accuracy on them and on the rest."""
    under = familiar < floor
    accuracy = lambda mask: float(right[mask].mean()) if mask.any() else None  # noqa: E731
    return {
        "scans": int(len(familiar)),
        "under_floor": int(under.sum()),
        "accuracy_under": accuracy(under),
        "accuracy_rest": accuracy(~under),
        "accuracy_all": accuracy(np.ones_like(under)),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The synthetic scans need the face models: AFFECTVLM_SFM_DIR and AFFECTVLM_ICT_DIR (docs/data.md).",
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="a trained checkpoint folder")
    parser.add_argument("--out", required=True, help="where to write the checkpoint with its floor")
    parser.add_argument("--seed", type=int, default=13, help="seed of the validation identities (default 13)")
    parser.add_argument("--subjects", type=int, default=20, help="validation identities (default 20: 500 scans)")
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_PERCENTILE,
        help="the floor: this percentile of the validation scans' familiarity (default %(default)s); 0 removes it",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit("--out must differ from --model: the original checkpoint is kept")
    if not 0 <= args.percentile < 50:
        raise SystemExit("--percentile must be in [0, 50)")
    from affectvlm import AffectVLMConfig
    from affectvlm.predictor import AffectVLMPredictor

    predictor = AffectVLMPredictor.from_pretrained(args.model)
    familiar, right = measure(predictor, args.seed, args.subjects)
    floor = round(float(np.percentile(familiar, args.percentile)), 4) if args.percentile > 0 else None
    config = AffectVLMConfig.from_pretrained(args.model)  # as saved, not as served (the serving dtype)
    config.familiarity_floor = floor
    shutil.copytree(args.model, args.out, dirs_exist_ok=True)
    config.save_pretrained(args.out)
    result = {
        "floor": floor, "percentile": args.percentile, "seed": args.seed, "subjects": args.subjects,
        **(floor_report(familiar, right, floor) if floor is not None else {}),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
