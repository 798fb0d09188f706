"""Write the app's example inputs: SynthFER-3D faces of held-out identities, from both face models.

    AFFECTVLM_SFM_DIR=/path/to/sfm AFFECTVLM_ICT_DIR=/path/to/ict python examples/make.py

From the Surrey Face Model (non-commercial, see README.md): three 3D scans, one 4D sequence (a zip of frames)
and the three rendered views of one scan. From the ICT FaceKit (MIT): three 3D scans built from action units.
All are identities of a seed no shipped checkpoint was trained or evaluated on. The files are committed; this
script says how they were made (`--only ict` writes the ICT files alone).
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

from affectvlm.data.synth import SynthConfig, SynthFER3D
from affectvlm.predictor import DEMO_CHECKPOINT
from affectvlm.processing_affectvlm import AffectVLMProcessor
from affectvlm.scan import write_ply
from affectvlm.scan.recipe import ScanRecipe

HERE = Path(__file__).resolve().parent
SCANS = [(0, "happiness"), (1, "surprise"), (2, "anger")]
SEQUENCE = (3, "happiness")
VIEWS_OF = (1, "disgust")
ICT_SCANS = [(1, "disgust"), (3, "fear"), (5, "sadness")]  # odd subjects: ICT in a "both" set
ICT_SEQUENCE = (1, "surprise")
ICT_VIEWS_OF = (3, "anger")
SEED = 2024  # not the training data's seed (0) nor the evaluation's (1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: examples/)")
    parser.add_argument("--only", choices=["sfm", "ict"], default=None, help="write one face model's files")
    args = parser.parse_args()
    if args.only != "sfm":
        ict = SynthFER3D(SynthConfig(seed=SEED, num_subjects=6, face_model="ict", subdivision_prob=0.0))
        for subject, label in ICT_SCANS:
            write_ply(args.out / f"scan_ict_subject{subject}_{label}.ply", ict.scan(subject, label, 4).to_scan())
        write_sequence(ict, *ICT_SEQUENCE, args.out / "sequence_ict_subject{}_{}.zip".format(*ICT_SEQUENCE))
        write_views(ict, *ICT_VIEWS_OF, args.out, "views_ict_subject{}_{}".format(*ICT_VIEWS_OF))
    if args.only == "ict":
        return
    # no subdivision: the files stay small (~100 KB a scan)
    gen = SynthFER3D(SynthConfig(seed=SEED, num_subjects=4, subdivision_prob=0.0))
    for subject, label in SCANS:
        write_ply(args.out / f"scan_subject{subject}_{label}.ply", gen.scan(subject, label, 4).to_scan())
    write_sequence(gen, *SEQUENCE, args.out / "sequence_subject{}_{}.zip".format(*SEQUENCE))
    write_views(gen, *VIEWS_OF, args.out, "views_subject{}_{}".format(*VIEWS_OF))


def write_sequence(gen, subject: int, label: str, zip_path: Path) -> None:
    """A 4D sequence (neutral -> apex -> offset) as a zip of PLY frames, as many as the default model pools."""
    recipe = ScanRecipe.from_settings(AffectVLMProcessor.from_pretrained(DEMO_CHECKPOINT).render_settings)
    frames = gen.sequence(subject, label, num_frames=recipe.frames).to_scans()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for t, frame in enumerate(frames):
            write_ply(Path(tmp) / "frame.ply", frame)
            z.write(Path(tmp) / "frame.ply", f"frame_{t:03d}.ply")


def write_views(gen, subject: int, label: str, folder: Path, stem: str) -> None:
    """The three views of a scan at its strongest expression, rendered by the scan pipeline at 224 px as the default
    model's views are drawn (its render mode)."""
    settings = AffectVLMProcessor.from_pretrained(DEMO_CHECKPOINT).render_settings
    recipe = ScanRecipe.from_settings({**(settings or {}), "size": 224})
    views = recipe.views_of([gen.scan(subject, label, 4).to_scan()])[0].numpy()
    for name, image in zip(("frontal", "left", "right"), views):
        Image.fromarray(image).save(folder / f"{stem}_{name}.png", optimize=True)


if __name__ == "__main__":
    main()
