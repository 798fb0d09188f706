"""Hostile inputs for the app and the predictor, written into a folder: each must be refused with a message that
names the problem (an InputError) or scored with an explicit note, in bounded time and memory.

Used by bench/app.py (server memory before and after the batch) and tests/test_hostile.py (each category).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

EMOTIONS = "anger, disgust, fear, happiness, sadness, surprise"
SCAN, VIEWS, SEQUENCE = "/predict_scan", "/predict_views", "/predict_sequence"


def write_obj(path: Path, vertices, faces=()) -> Path:
    with open(path, "w") as f:
        f.writelines(f"v {x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in np.asarray(vertices, float))
        f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in np.asarray(faces, int).reshape(-1, 3))
    return path


def cube(size: float = 1.0, subdivisions: int = 0):
    import trimesh

    mesh = trimesh.creation.box((size, size, size))
    for _ in range(subdivisions):
        mesh = mesh.subdivide()
    return mesh.vertices, mesh.faces


def large_triangles(count: int = 20_000, seed: int = 0):
    """`count` triangles each spanning much of the face window (render cost grows with covered pixels), all
    inside a 90 mm ball, so that the crop about the nose tip keeps every one."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(3 * count, 3))
    vertices = 45 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return vertices, np.arange(3 * count).reshape(-1, 3)


def zip_bomb(path: Path, megabytes: int = 600) -> Path:
    """A ~0.6 MB zip whose one frame unpacks to `megabytes` MB of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("frame_000.obj", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                f.write(block)
    return path


def bump_grid(columns: int, rows: int):
    """A face-sized grid (160 x 200 mm) with a nose-like bump: (vertices, triangles)."""
    x, y = np.meshgrid(np.linspace(-80, 80, columns), np.linspace(-100, 100, rows))
    z = 40 * np.exp(-(x**2 + y**2) / 600) - 0.004 * (x**2 + y**2)
    vertices = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    idx = np.arange(columns * rows).reshape(rows, columns)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return vertices, np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def worst_within_caps(folder: Path, quads: bool = False) -> Path:
    """The largest scan the caps allow, near the 2 M-vertex cap: a 980 x 980 grid, 1.9 M triangles, a 35 MB
    binary PLY (the memory figure for the worst input that is accepted). `quads`: the grid's cells as 0.96 M
    quads with one triangle among them, as Blender writes a mesh, which trimesh cannot read and
    `affectvlm.scan.ply` reads face by face."""
    from affectvlm.scan import Scan, write_ply

    vertices, triangles = bump_grid(980, 980)
    if not quads:
        write_ply(folder / "dense.ply", Scan(vertices.astype(np.float32), triangles))
        return folder / "dense.ply"
    cells = np.concatenate([triangles[: len(triangles) // 2], triangles[len(triangles) // 2 :, 2:]], axis=1)
    cells = cells[:, [0, 1, 3, 2]]  # (a, c, b) + d -> the quad a, c, d, b around the cell
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\nproperty float x\n"
        f"property float y\nproperty float z\nelement face {len(cells) + 1}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode()
    body = np.zeros(len(cells), [("n", "u1"), ("v", "<i4", 4)])
    body["n"], body["v"] = 4, cells
    triangle = np.array([3], "u1").tobytes() + cells[0, :3].astype("<i4").tobytes()
    (folder / "quads.ply").write_bytes(header + vertices.astype("<f4").tobytes() + body.tobytes() + triangle)
    return folder / "quads.ply"


def strips_flood(path: Path, indices: int = 20_000_000) -> Path:
    """An ASCII PLY of three vertices and triangle strips of `indices` indices on one line (45 MB): more than the
    triangle cap's worth, refused after one pass over its bytes (`affectvlm.scan.ply`)."""
    header = (
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element tristrips 1\nproperty list int int vertex_indices\nend_header\n0 0 0\n50 0 0\n0 50 0\n"
    )
    with open(path, "wb") as fh:
        fh.write(f"{header}{indices} ".encode())
        fh.write(b"0 1 2 -1 " * (indices // 4) + b"\n")
    return path


def motionless(folder: Path, face: Path) -> Path:
    """A zip of six identical frames of a face (one example scan): no motion to pool. A face, not a bare
    surface: normalising each frame on its own (registration onto the first) once made still frames jitter."""
    with zipfile.ZipFile(folder / "motionless.zip", "w") as z:
        for t in range(6):
            z.write(face, f"frame_{t:03d}{face.suffix}")
    return folder / "motionless.zip"


def hostile_inputs(folder: Path) -> dict[str, tuple[list, str, str]]:
    """name -> (files, labels text, api name) for the app's endpoints."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    face = next((Path(__file__).resolve().parents[1] / "examples").glob("scan_*.ply"))
    blank = folder / "blank.png"
    Image.new("RGB", (224, 224)).save(blank)
    return {
        "unit cube": ([write_obj(folder / "cube.obj", *cube())], EMOTIONS, SCAN),
        "subdivided cube (no nose)": ([write_obj(folder / "cube4.obj", *cube(150, 4))], EMOTIONS, SCAN),
        "one triangle": ([write_obj(folder / "tri.obj", np.eye(3) * 50, [[0, 1, 2]])], EMOTIONS, SCAN),
        "one point": ([write_obj(folder / "dot.obj", [[1, 2, 3]])], EMOTIONS, SCAN),
        "identical vertices": (
            [write_obj(folder / "same.obj", np.ones((100, 3)), [[0, 1, 2]] * 30)],
            EMOTIONS,
            SCAN,
        ),
        "zero-area triangles": (
            [write_obj(folder / "flat.obj", np.zeros((3, 3)), [[0, 1, 2]])],
            EMOTIONS,
            SCAN,
        ),
        "1e30 coordinates": ([write_obj(folder / "huge.obj", np.eye(3) * 1e30, [[0, 1, 2]])], EMOTIONS, SCAN),
        "20k large triangles": ([write_obj(folder / "big.obj", *large_triangles())], EMOTIONS, SCAN),
        "triangle strips beyond the cap": ([strips_flood(folder / "strips.ply")], EMOTIONS, SCAN),
        "zip bomb (600 MB frame)": ([[zip_bomb(folder / "bomb.zip")]], EMOTIONS, SEQUENCE),
        "motionless sequence": ([[motionless(folder, face)]], EMOTIONS, SEQUENCE),
        "blank views": ([blank, blank, blank], EMOTIONS, VIEWS),
        "10,000 labels": ([face], ", ".join(f"label{i}" for i in range(10_000)), SCAN),
        "a 1 MB label": ([face], "x" * 1_000_000 + ", sad", SCAN),
    }
