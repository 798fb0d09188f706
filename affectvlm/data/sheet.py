"""The SynthFER-3D contact sheet: what the generator's expressions look like, one row per (label, face model).

    python -m affectvlm.data sheet --out docs/img/synthfer3d_sheet.png

Each row is one scan of one subject (the same subject for all the rows of a face model, so that only the
expression changes) at the top intensity, rendered by the scan pipeline (:class:`affectvlm.scan.ScanRecipe`)
in its three views (frontal, left, right); the label on the left names the face model, the label and, for
action units, the recipe variant drawn. A last row shows scanner realism on one of those scans. The title
states the face models' licences: the Surrey Face Model's renders are non-commercial (research and teaching
only), the ICT FaceKit's are MIT. Look at it: every row should read as its label to a person.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .synth import EMOTIONS, LICENCES, SynthConfig, SynthFER3D

__all__ = ["LABEL_WIDTH", "SHEET_LABELS", "TITLE_HEIGHT", "render_sheet", "sheet_rows", "write_sheet"]

SHEET_LABELS = ("neutral", *EMOTIONS)
# what the realism row shows: the kinds a person can see in a render (the frame kinds are undone by normalising)
REALISM_KINDS = ("holes", "boundary", "noise", "spikes")
LABEL_WIDTH = 190  # pixels of the label column
TITLE_HEIGHT = 52  # pixels of the title band: what it is, then one licence line per face model
_NAMES = {"sfm": "SFM", "ict": "ICT FaceKit"}


def _first_subject(config: SynthConfig, face_model: str, nth: int) -> int:
    """The index of the `nth` subject (0-based) of a face model."""
    matches = [i for i in range(config.num_subjects) if config.face_model_of(i) == face_model]
    if nth >= len(matches):
        raise ValueError(
            f"{config.num_subjects} subjects hold only {len(matches)} {face_model} subjects, not {nth + 1}"
        )
    return matches[nth]


def _caption(face_model: str, label: str, meta: dict) -> str:
    lines = [_NAMES[face_model], label]
    if meta.get("au_code") is not None:
        lines.append(f"AUs {meta['au_code'] or '-'}")
        if meta.get("au_binding") == "transfer":
            lines.append("(ICT shapes)")
    elif meta.get("expressions") == "blendshapes":
        lines.append("blendshapes")
    return "\n".join(lines)


def sheet_rows(gen: SynthFER3D, subject: int = 0, intensity: int | None = None) -> list[tuple[str, object]]:
    """(caption, Scan) for each face model of the generator's config and each of :data:`SHEET_LABELS`, then
    one realism row (:data:`REALISM_KINDS` on the last face model's happiness scan).

    Args:
        subject: which subject of each face model (0: its first).
        intensity: the emotions' intensity level (default: the top one).
    """
    from .realism import RealismConfig

    cfg = gen.config
    intensity = intensity or len(cfg.intensity_levels)
    rows = []
    for face_model in cfg.face_models:
        index = _first_subject(cfg, face_model, subject)
        for label in SHEET_LABELS:
            scan = gen.scan(index, label, intensity)
            rows.append((_caption(face_model, label, scan.metadata), scan.to_scan()))
    needs_ict = "ict" in cfg.face_models or (cfg.sfm_binding == "transfer" and cfg.uses_aus)  # the kit's shapes
    real = SynthFER3D(cfg.replace(realism=RealismConfig.only(*REALISM_KINDS)), gen.sfm if "sfm" in cfg.face_models else None,
                      gen.ict if needs_ict else None)  # fmt: skip
    scan = real.scan(index, "happiness", intensity)
    kinds = [", ".join(scan.realism[i : i + 2]) for i in range(0, len(scan.realism), 2)] or ["none"]
    rows.append(("\n".join([_NAMES[face_model], "happiness, realism:", *kinds]), scan.to_scan()))
    return rows


def render_sheet(gen: SynthFER3D, size: int = 128, subject: int = 0, intensity: int | None = None):
    """The contact sheet as a PIL image: width ``LABEL_WIDTH + 3 * size``, height ``TITLE_HEIGHT + rows * size``
    with ``rows = 7 * len(face models) + 1``; greyscale when the renders are (the pipeline's ``normal`` mode)."""
    from PIL import Image, ImageDraw, ImageFont

    from ..scan.recipe import ScanRecipe

    rows = sheet_rows(gen, subject, intensity)
    views = ScanRecipe(size=size).views_of([scan for _, scan in rows]).numpy()  # (R, V, H, W, 3)
    n, v = views.shape[:2]
    grid = np.zeros((TITLE_HEIGHT + n * size, LABEL_WIDTH + v * size, 3), np.uint8)
    for r in range(n):
        grid[TITLE_HEIGHT + r * size : TITLE_HEIGHT + (r + 1) * size, LABEL_WIDTH:] = np.concatenate(
            views[r], axis=1
        )
    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=11)
    title = [f"SynthFER-3D v2, seed {gen.config.seed}: views frontal, left, right"]
    title += [f"{_NAMES[m]}: {LICENCES[m]}" for m in gen.config.face_models]
    draw.multiline_text((6, 4), "\n".join(title), fill=(255, 255, 255), font=small, spacing=3)
    for r, (caption, _) in enumerate(rows):
        draw.multiline_text(
            (8, TITLE_HEIGHT + r * size + 8), caption, fill=(255, 255, 255), font=font, spacing=3
        )
        draw.line([(0, TITLE_HEIGHT + r * size), (grid.shape[1], TITLE_HEIGHT + r * size)], fill=(60, 60, 60))
    pixels = np.asarray(image)
    gray = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
    return image.convert("L") if gray else image


def write_sheet(
    path, gen: SynthFER3D, size: int = 128, subject: int = 0, intensity: int | None = None
) -> Path:
    """Render the contact sheet and write it as an (optimised) PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_sheet(gen, size, subject, intensity).save(path, optimize=True)
    return path
