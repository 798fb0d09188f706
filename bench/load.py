"""How fast each scan format is read: milliseconds a file and megabytes a second, by `affectvlm.scan.load_scan`.

    python bench/load.py                  # a face of about 110k triangles (two subdivisions), every format
    python bench/load.py --levels 0 1 2   # the face at 7k, 27k and 110k triangles

Reading is what preparing a dataset spends most of its time on after rendering (BU-3DFE's `.wrl` files, BU-4DFE's
thousands of frames), and what every upload to the app pays first. The face is `affectvlm.testing.face_mesh`
with texture coordinates, subdivided (`affectvlm.data.realism.subdivide`), written by the package's own writers.
The minimum over repeats is the figure to compare on a shared machine; the median is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.data.realism import subdivide  # noqa: E402
from affectvlm.scan import load_scan, write_obj, write_pcd, write_ply, write_wrl  # noqa: E402
from affectvlm.testing import face_mesh  # noqa: E402

WRITERS = {
    "wrl": write_wrl,
    "obj": write_obj,
    "ply (binary)": lambda p, s: write_ply(p, s, binary=True),
    "ply (ascii)": lambda p, s: write_ply(p, s, binary=False),
    "pcd (binary)": lambda p, s: write_pcd(p, s, data="binary"),
    "pcd (ascii)": lambda p, s: write_pcd(p, s, data="ascii"),
}


def time_reads(path: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_scan(path, load_texture=False)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[2], help="subdivision levels of the face (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="reads a file (default 5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for level in args.levels:
            scan = face_mesh("happiness")
            for _ in range(level):
                scan = subdivide(scan)
            print(f"face: {scan.num_vertices:,} vertices, {scan.num_faces:,} triangles")
            for name, write in WRITERS.items():
                path = Path(tmp) / f"face{level}.{name.split()[0]}"
                write(path, scan)
                times = time_reads(path, args.repeats)
                mb = path.stat().st_size / 1e6
                print(f"  {name:13s} {mb:6.1f} MB  min {1000 * min(times):7.1f} ms  "
                      f"median {1000 * statistics.median(times):7.1f} ms  {mb / min(times):6.1f} MB/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
