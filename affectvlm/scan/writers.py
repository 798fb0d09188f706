"""Writers for the formats the readers accept: `.wrl` (BU-3DFE style), `.obj`, `.ply`; `.bnt` and `.pcd` live
in `bnt.py` and `pcd.py`. SynthFER-3D uses them to write dataset-shaped trees; the tests use them for round trips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .bnt import write_bnt
from .types import Scan, ScanError

__all__ = ["write_wrl", "write_obj", "write_ply", "write_bnt", "write_texture"]


def write_texture(path, texture: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 image; the format follows the extension (.bmp, .png, .jpg)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(texture[:, :, :3], dtype=np.uint8)).save(path)


def _rows(arr: np.ndarray, fmt: str, sep: str = ",\n") -> str:
    buf = io.StringIO()
    np.savetxt(buf, arr, fmt=fmt, delimiter=" ", newline=sep)
    return buf.getvalue()[: -len(sep)] if len(arr) else ""


def write_wrl(path, scan: Scan, texture_name: str | None = None) -> None:
    """Write a VRML 2.0 IndexedFaceSet laid out like BU-3DFE's `_F3D.wrl`.

    Args:
        path: the `.wrl` file to write.
        scan: a mesh or point cloud; `scan.uv` becomes `texCoord` with a `texCoordIndex` equal to
            `coordIndex` (per-vertex uvs written per corner, as BU-3DFE does); colours become a
            per-vertex `Color` node.
        texture_name: file name for the `ImageTexture` url, relative to the `.wrl`. When the scan
            has a texture image it is saved under that name beside the file (default: the `.wrl`
            name with `.bmp`, as BU-3DFE); when it has none, the url is written as given and the
            caller provides the image.
    """
    path = Path(path)
    has_uv = scan.uv is not None
    if has_uv and texture_name is None and scan.texture is not None:
        texture_name = path.with_suffix(".bmp").name
    if has_uv and scan.texture is not None:
        write_texture(path.parent / texture_name, scan.texture)
    faces = scan.faces if scan.faces is not None else np.zeros((0, 3), np.int64)
    corner_index = _rows(np.concatenate([faces, -np.ones((len(faces), 1), np.int64)], 1), "%d")
    parts = ["#VRML V2.0 utf8\n\nTransform {\n  children [\n    Shape {\n"]
    if texture_name and has_uv:
        parts.append(
            f'      appearance Appearance {{\n        texture ImageTexture {{\n          url "{texture_name}"\n        }}\n      }}\n'
        )
    parts.append("      geometry IndexedFaceSet {\n        creaseAngle 3.14\n        solid FALSE\n")
    parts.append("        coord Coordinate {\n          point [\n")
    parts.append(_rows(scan.vertices, "%.6f"))
    parts.append("\n          ]\n        }\n")
    parts.append(f"        coordIndex [\n{corner_index}\n        ]\n")
    if scan.colors is not None:
        parts.append("        colorPerVertex TRUE\n        color Color {\n          color [\n")
        parts.append(_rows(scan.colors.astype(np.float64) / 255.0, "%.6f"))
        parts.append("\n          ]\n        }\n")
    if has_uv:
        parts.append("        texCoord TextureCoordinate {\n          point [\n")
        parts.append(_rows(scan.uv, "%.6f"))
        parts.append(f"\n          ]\n        }}\n        texCoordIndex [\n{corner_index}\n        ]\n")
    parts.append("      }\n    }\n  ]\n}\n")
    parts.append('Viewpoint {\n  position 0 0 400\n  description "front"\n}\n')
    path.write_text("".join(parts))


def write_obj(path, scan: Scan, texture_name: str | None = None) -> None:
    """Write a Wavefront OBJ; uvs as `vt` with `f a/a b/b c/c`, colours as `v x y z r g b` (0-1).

    A texture image is saved as PNG with an `.mtl` beside the file (`texture_name` defaults to the
    OBJ name with `.png`).
    """
    path = Path(path)
    parts = []
    has_tex = scan.uv is not None and scan.texture is not None
    if has_tex:
        texture_name = texture_name or path.with_suffix(".png").name
        write_texture(path.parent / texture_name, scan.texture)
        mtl = path.with_suffix(".mtl")
        mtl.write_text(f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nmap_Kd {texture_name}\n")
        parts.append(f"mtllib {mtl.name}\nusemtl material0\n")
    if scan.colors is not None:
        v = np.concatenate([scan.vertices, scan.colors / 255.0], axis=1)
        parts.append(_rows(v, "v %.6f %.6f %.6f %.4f %.4f %.4f", "\n") + "\n")
    else:
        parts.append(_rows(scan.vertices, "v %.6f %.6f %.6f", "\n") + "\n")
    if scan.uv is not None:
        parts.append(_rows(scan.uv, "vt %.6f %.6f", "\n") + "\n")
    if scan.faces is not None and len(scan.faces):
        f = scan.faces + 1
        if scan.uv is not None:
            parts.append(_rows(np.repeat(f, 2, axis=1), "f %d/%d %d/%d %d/%d", "\n") + "\n")
        else:
            parts.append(_rows(f, "f %d %d %d", "\n") + "\n")
    path.write_text("".join(parts))


def write_ply(path, scan: Scan, binary: bool = True) -> None:
    """Write a PLY mesh or point cloud (float32 xyz, uchar rgb when coloured, int32 triangle lists)."""
    n = scan.num_vertices
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if scan.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(n, dtype=fields)
    for i, axis in enumerate("xyz"):
        vert[axis] = scan.vertices[:, i]
    if scan.colors is not None:
        for i, ch in enumerate(("red", "green", "blue")):
            vert[ch] = scan.colors[:, i]
    faces = scan.faces if scan.faces is not None else np.zeros((0, 3), np.int64)
    if len(faces) and faces.max() >= 2**31:
        raise ScanError("too many vertices for int32 PLY face indices")
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {n}"]
    header += [f"property float {a}" for a in "xyz"]
    if scan.colors is not None:
        header += [f"property uchar {c}" for c in ("red", "green", "blue")]
    if len(faces):
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header\n")
    with open(path, "wb") as fh:
        fh.write("\n".join(header).encode("ascii"))
        if binary:
            fh.write(vert.tobytes())
            if len(faces):
                frec = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
                frec["n"] = 3
                frec["i"] = faces
                fh.write(frec.tobytes())
        else:
            cols = [scan.vertices.astype(np.float64)]
            fmt = "%.6f %.6f %.6f"
            if scan.colors is not None:
                cols.append(scan.colors.astype(np.float64))
                fmt += " %d %d %d"
            fh.write(_rows(np.concatenate(cols, axis=1), fmt, "\n").encode() + b"\n")
            if len(faces):
                fh.write(_rows(faces, "3 %d %d %d", "\n").encode() + b"\n")
