"""Benchmark the scan renderer: per-scan time for three 224x224 views, normalisation included.

Meshes: the Surrey Face Model mean face (about 7k faces) and its 1x and 2x subdivisions (about 27k
and 108k faces). On a shared machine the minimum over repeats is the figure to compare (it is the
run least disturbed by other processes); the median is printed beside it.

    python bench/render.py                       # CPU, per-scan times
    python bench/render.py --device cuda         # also scans/s in batches of 64 on the GPU
    python bench/render.py --large 200000        # time and peak memory of the worst input instead

--large renders N triangles that each cover thousands of pixels (bench/hostile.py's hostile input scaled
into the unit sphere, like normalize_scan output): render memory must not grow with covered pixels, time
does (about 1 ms per triangle on one CPU thread, so 200k take minutes).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectvlm.data.realism import RealismConfig, apply_realism  # noqa: E402
from affectvlm.scan import Scan, normalize_scan, normalize_sequence, render_views  # noqa: E402
from affectvlm.scan.normalize import axis_rotation, find_face  # noqa: E402
from affectvlm.testing import head_drift, standing_body, surface_sample, wall_behind, with_inside  # noqa: E402
from bench.hostile import large_triangles  # noqa: E402


def sfm_meshes(sfm_dir: Path, levels) -> dict[int, Scan]:
    """The SFM mean face subdivided 0, 1, 2... times (trimesh: each subdivision gives 4x faces)."""
    import trimesh

    data = np.load(sfm_dir / "sfm_3448.npz")
    mesh = trimesh.Trimesh(data["mean"], data["triangles"], process=False)
    out = {}
    for level in range(max(levels) + 1):
        if level in levels:
            out[level] = Scan(vertices=np.asarray(mesh.vertices, np.float32), faces=np.asarray(mesh.faces))
        mesh = mesh.subdivide()
    return out


def large_scan(count: int) -> Scan:
    """`count` random triangles with corners in the cube inscribed in the unit sphere: each covers
    thousands of pixels of every 224 x 224 view, and they all overlap."""
    vertices, faces = large_triangles(count)
    return Scan(vertices=(vertices / (100.0 * np.sqrt(3.0))).astype(np.float32), faces=faces)


def measure(fn) -> tuple[float, float]:
    """Seconds and peak RSS growth in MB (ru_maxrss, KB on Linux) of one call of `fn`: the growth over
    the process's peak so far, so measure before anything larger has run."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def repeat(fn, arg, repeats: int) -> list[float]:
    """Seconds per call of fn(arg), `repeats` times after one untimed call."""
    fn(arg)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return times


def time_cpu(scan: Scan, size: int, mode: str, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of normalize_scan + render_views (3 default views)."""
    for _ in range(warmup):
        render_views(normalize_scan(scan), size=size, mode=mode)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render_views(normalize_scan(scan), size=size, mode=mode)
        times.append(time.perf_counter() - start)
    return times


def time_find_face(scan: Scan, repeats: int) -> dict[str, list[float]]:
    """Seconds per `find_face` call (the orientation search inside normalize_scan) on the face as it is, with its
    head looking down 25 degrees and rolled 20 (then set upright), in no unit (its size gives the scale), in front
    of a 1 m wall of 60,000 points, with a neck, shoulders and chest below it and a wall behind
    (`affectvlm.data.realism`'s scene; both found about a candidate nose: step 3b), as a point cloud of a whole
    person standing below it in inches (`affectvlm.testing.standing_body`), and on a sphere (no face: every search
    runs)."""
    posed = (scan.vertices @ (axis_rotation(2, 20) @ axis_rotation(0, 25)).T).astype(np.float32)
    v = scan.vertices
    wall = np.concatenate([v, wall_behind(v)])
    person = apply_realism(scan, np.random.default_rng(0), RealismConfig.only("scene", wall=1.0))[0].vertices
    sphere = np.random.default_rng(0).normal(size=(20_000, 3)).astype(np.float32)
    sphere *= 100.0 / np.linalg.norm(sphere, axis=1, keepdims=True)
    scenes = (("frontal", v), ("down 25, rolled 20", posed), ("unitless (mm / 100)", v / 100.0))
    standing = np.concatenate([surface_sample(scan, 30_000).vertices, standing_body(v)]) / 25.4
    scenes += (("before a wall", wall), ("a person", person), ("a whole standing person (inches)", standing))
    return {name: repeat(find_face, v, repeats) for name, v in scenes + (("no face (a sphere)", sphere),)}


def time_gpu(scan: Scan, size: int, mode: str, batch: int, repeats: int, device: str) -> float:
    """Scans per second rendered (3 views each) in batches on the GPU; normalisation excluded (CPU)."""
    scans = [normalize_scan(scan)] * batch
    for _ in range(3):
        render_views(scans, size=size, mode=mode, device=device, as_tensor=True)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        render_views(scans, size=size, mode=mode, device=device, as_tensor=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return batch / best


def bench_large(count: int, size: int, mode: str, device: str) -> int:
    """Print the time and peak memory growth of rendering `large_scan(count)` (3 views), first thing in
    the process after a tiny warm-up render."""
    scan = large_scan(count)
    render_views(large_scan(3), size=size, mode=mode, device=device)
    seconds, grown_mb = measure(lambda: render_views(scan, size=size, mode=mode, device=device))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {count} large triangles, "
        f"{size}x{size}, 3 views, mode={mode}, {device}: {seconds:.2f} s, peak RSS +{grown_mb:.0f} MB"
    )
    if device != "cpu":
        print(f"GPU peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    return 0


def time_sequence(scan: Scan, frames: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per frame of `normalize_sequence` on `frames` copies of the face, the head still and drifting by
    3 degrees and 3 mm a frame (`affectvlm.testing.head_drift`): the later frames' motion is found and taken out
    (`affectvlm.scan.register.follow`)."""
    still = [scan] * frames
    out = {}
    for name, sequence in (("still", still), ("drifting", head_drift(still, 3.0, 3.0))):
        normalize_sequence(sequence)
        out[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            normalize_sequence(sequence)
            out[name].append((time.perf_counter() - start) / frames)
    return out


def time_denoise(meshes: dict[int, Scan], repeats: int) -> dict[str, list[float]]:
    """Seconds per `normalize_scan` (which measures every scan's noise and smooths a noisy one:
    `affectvlm.scan.denoise`) of each mesh as it is, with 1 mm of noise on every coordinate and with a surface
    behind it that no view sees (measured again on what the views see: `denoise.seen_vertices`), and of a
    300,000-point cloud (a dense depth camera's capture of the face) with 1 mm of noise."""
    rng = np.random.default_rng(0)

    def noisy(v: np.ndarray) -> np.ndarray:
        return (v + rng.normal(0.0, 1.0, v.shape)).astype(np.float32)

    dense = meshes[max(meshes)].vertices
    cloud = Scan(noisy(dense[rng.integers(0, len(dense), 300_000)]))
    cases = {}
    for _, scan in sorted(meshes.items()):
        cases[f"{scan.num_vertices} vertices, as is"] = scan
        cases[f"{scan.num_vertices} vertices, 1 mm noise"] = scan.replace(vertices=noisy(scan.vertices))
        cases[f"{scan.num_vertices} vertices, a hidden surface 6 mm behind"] = with_inside(scan)
    cases["a 300,000-point cloud, 1 mm noise"] = cloud
    return {name: repeat(normalize_scan, scan, repeats) for name, scan in cases.items()}


def time_clouds(mesh: Scan, size: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per `render_views` of the normalised `mesh` sampled as point clouds: sparse ones (under
    `render._SPARSE_PIXELS` apart at `size`) are drawn as the mesh of their frontal range image, the dense one as
    surfels."""
    face = normalize_scan(mesh)
    clouds = {f"{n:,} points": surface_sample(face, n, 0) for n in (800, 3_000, 100_000)}
    return {
        name: repeat(lambda c: render_views(c, size=size), cloud, repeats) for name, cloud in clouds.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_sfm = os.environ.get("AFFECTVLM_SFM_DIR", str(ROOT.parent / "shared" / "sfm"))
    parser.add_argument(
        "--sfm-dir",
        type=Path,
        default=Path(default_sfm),
        help=f"Surrey Face Model folder (default {default_sfm})",
    )
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[0, 1, 2], help="subdivision levels (default 0 1 2)"
    )
    parser.add_argument("--size", type=int, default=224, help="image size (default 224)")
    parser.add_argument("--mode", default="normal", help="render mode (default normal)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per mesh (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add the batched GPU figure")
    parser.add_argument("--batch", type=int, default=64, help="GPU batch size (default 64)")
    parser.add_argument(
        "--large", type=int, default=0, help="render this many large triangles once instead (time, memory)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.large:
        return bench_large(args.large, args.size, args.mode, args.device)
    if not (args.sfm_dir / "sfm_3448.npz").is_file():
        parser.error(f"no sfm_3448.npz in {args.sfm_dir}: pass --sfm-dir or set AFFECTVLM_SFM_DIR")
    meshes = sfm_meshes(args.sfm_dir, set(args.levels))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {args.size}x{args.size}, 3 views, mode={args.mode}"
    )
    print(
        f"{'faces':>8} {'vertices':>9} {'CPU min ms':>11} {'median ms':>10}"
        + ("  GPU scans/s" if args.device != "cpu" else "")
    )
    for level in sorted(meshes):
        scan = meshes[level]
        times = time_cpu(scan, args.size, args.mode, args.repeats, args.warmup)
        line = f"{scan.num_faces:>8} {scan.num_vertices:>9} {min(times) * 1e3:>11.2f} {statistics.median(times) * 1e3:>10.2f}"
        if args.device != "cpu":
            line += f"  {time_gpu(scan, args.size, args.mode, args.batch, max(3, args.repeats // 5), args.device):>11.0f}"
        print(line)
    for name, times in time_clouds(meshes[min(meshes)], args.size, args.repeats).items():
        low, mid = min(times) * 1e3, statistics.median(times) * 1e3
        print(f"render_views, a point cloud of {name}: min {low:.1f} ms, median {mid:.1f} ms")
    for name, times in time_find_face(meshes[min(meshes)], args.repeats).items():
        low, mid = min(times) * 1e3, statistics.median(times) * 1e3
        print(f"find_face, {name}: min {low:.1f} ms, median {mid:.1f} ms")
    for name, times in time_sequence(meshes[min(meshes)], 8, max(1, args.repeats // 5)).items():
        low, mid = min(times) * 1e3, statistics.median(times) * 1e3
        print(f"normalize_sequence, 8 frames, head {name}: min {low:.1f} ms, median {mid:.1f} ms a frame")
    for name, times in time_denoise(meshes, max(1, args.repeats // 5)).items():
        low, mid = min(times) * 1e3, statistics.median(times) * 1e3
        print(f"normalize_scan, {name}: min {low:.1f} ms, median {mid:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
