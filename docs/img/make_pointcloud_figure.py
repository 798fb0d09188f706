"""Make docs/img/pointcloud_before_after.png: point clouds of the procedural face rendered by the old
renderer (flat discs of one radius, normals from a box-smoothed depth map) and by the surfel renderer, with
the mesh they were sampled from for reference.

    python docs/img/make_pointcloud_figure.py [--out docs/img/pointcloud_before_after.png] [--size 160]

"Before" is the renderer of commit bf6156e, read from the repository's history with git.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from affectvlm.scan import normalize_scan, render_views  # noqa: E402
from affectvlm.testing import face_mesh  # noqa: E402
from tests.test_scan_render_points import surface_sample  # noqa: E402

BEFORE_COMMIT = "bf6156e"  # the last renderer with flat point splats
VIEWS = [(0.0, 0.0), (20.0, 0.0)]  # frontal and left


def old_render_views():
    """`render_views` of the renderer at BEFORE_COMMIT, loaded from git into a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:affectvlm/scan/render.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("from .types import", "from affectvlm.scan.types import")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("render_before", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Path(f.name).unlink()
    return module.render_views


def strip(render, scan, size: int) -> np.ndarray:
    """The frontal and left views side by side, grey (H, 2 W) uint8."""
    return np.concatenate(list(render(scan, views=VIEWS, size=size)[0, ..., 0]), 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "pointcloud_before_after.png")
    parser.add_argument("--size", type=int, default=160, help="rendered view size in pixels")
    args = parser.parse_args(argv)
    before = old_render_views()
    mesh = normalize_scan(face_mesh().replace(uv=None))
    rows = [
        ("mesh", "(reference)", mesh),
        ("2,528 points", "(its vertices)", mesh.replace(faces=None)),
        ("3,000 points", "(sparse, random)", surface_sample(mesh, 3_000, 1)),
        ("100,000 points", "(dense, random)", surface_sample(mesh, 100_000, 2)),
    ]
    size, label_w, head_h, gap = args.size, 150, 30, 12
    width = label_w + 4 * size + gap
    canvas = Image.new("L", (width, head_h + len(rows) * size), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    draw.text((label_w + size, 6), "before", fill=0, font=font, anchor="ma")
    draw.text((label_w + 3 * size + gap, 6), "after", fill=0, font=font, anchor="ma")
    for r, (name, note, scan) in enumerate(rows):
        y = head_h + r * size
        canvas.paste(Image.fromarray(strip(before, scan, size)), (label_w, y))
        canvas.paste(Image.fromarray(strip(render_views, scan, size)), (label_w + 2 * size + gap, y))
        draw.text((8, y + size // 2 - 18), name, fill=0, font=font)
        draw.text((8, y + size // 2 + 2), note, fill=0, font=font)
    canvas.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
