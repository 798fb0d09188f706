"""Tiny, offline-built models, tokenizers and face meshes for tests, benchmarks and the no-checkpoint fallback.

Nothing here touches the network or needs a face model: the tokenizer is a character-level CLIP BPE built
from an in-memory vocabulary, the CLIP configs are small enough to run in milliseconds, and `face_mesh` /
`toy_face_model` build a face-like surface from a formula, where the Surrey Face Model (licence-restricted,
not on a fresh machine) is not what is being tested.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
from transformers import CLIPConfig, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .configuration_affectvlm import AffectVLMConfig
from .processing_affectvlm import AffectVLMProcessor

_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes (as in GPT-2)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@lru_cache(maxsize=1)
def _char_vocab() -> dict[str, int]:
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + _SPECIAL
    return {token: i for i, token in enumerate(tokens)}


TINY_VOCAB_SIZE = 2 * 256 + len(_SPECIAL)


def tiny_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP tokenizer (514 tokens) built offline; any text tokenises without unknowns."""
    vocab = _char_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=[])


def tiny_clip_config(
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 32,
    vocab_size: int = TINY_VOCAB_SIZE,
    max_position_embeddings: int = 77,
    intermediate_size: int | None = None,
) -> CLIPConfig:
    """A CLIP config small enough for unit tests (defaults: hidden 32, 2 layers, image 32, patch 8; MLPs
    `intermediate_size` wide, 2 x hidden unless given: ViT-B's is 3,072 = 4 x 768)."""
    intermediate_size = intermediate_size or 2 * hidden_size
    special = _char_vocab()
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "max_position_embeddings": max_position_embeddings,
        "projection_dim": projection_dim,
        "bos_token_id": special["<|startoftext|>"],
        "eos_token_id": special["<|endoftext|>"],
        "pad_token_id": special["<|endoftext|>"],
    }
    vision = {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": projection_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def vit_b32_clip_config() -> CLIPConfig:
    """CLIP ViT-B/32's architecture (random weights) with the tiny tokenizer's vocabulary."""
    special = _char_vocab()
    return CLIPConfig(
        text_config={
            "vocab_size": TINY_VOCAB_SIZE,
            "bos_token_id": special["<|startoftext|>"],
            "eos_token_id": special["<|endoftext|>"],
            "pad_token_id": special["<|endoftext|>"],
        },
        vision_config={"image_size": 224, "patch_size": 32},
        projection_dim=512,
    )


def tiny_config(**overrides) -> AffectVLMConfig:
    """An AffectVLMConfig over `tiny_clip_config()`; `overrides` are AffectVLMConfig fields."""
    clip_config = overrides.pop("clip_config", None) or tiny_clip_config()
    return AffectVLMConfig(clip_config=clip_config, **overrides)


def tiny_processor(image_size: int = 32, view_names: list[str] | None = None) -> AffectVLMProcessor:
    """A processor that resizes views to `image_size` and tokenises with `tiny_tokenizer()`."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return AffectVLMProcessor(
        image_processor=image_processor, tokenizer=tiny_tokenizer(), view_names=view_names
    )


def tiny_text_encoder(folder, hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    """Write a tiny random BERT text encoder and its WordPiece tokenizer (a small vocabulary of letters and
    words) to `folder`, as Hugging Face files: a stand-in for a pretrained sentence encoder in tests, no
    download. Returns the folder (a `text_model_name_or_path`)."""
    from pathlib import Path

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = "a the of face photo person with expression happy sad angry fear surprise disgust neutral".split()
    letters = list("abcdefghijklmnopqrstuvwxyz.,:'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters], *words]
    # the vocabulary as a dict: transformers 5 ignores `vocab_file` here and would leave only the special tokens
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_pretrained_text_model(encoder, label_names: list[str], seed: int = 0):
    """A tiny AffectVLMModel (eval mode) whose text side is the encoder that `tiny_text_encoder` wrote to
    `encoder` (frozen, its weights loaded), with a random projection (`torch.manual_seed(seed)`)."""
    import torch
    from transformers import AutoConfig

    from .modeling_affectvlm import AffectVLMModel

    torch.manual_seed(seed)
    config = tiny_config(
        text_backbone="pretrained",
        text_config=AutoConfig.from_pretrained(encoder).to_dict(),
        text_model_name_or_path=str(encoder),
        label_names=list(label_names),
    )
    model = AffectVLMModel(config).eval()
    model.load_text_weights()
    return model


# --- a procedural face ---------------------------------------------------------------------------------
# Millimetres, +y up, +z towards the viewer, as the Surrey Face Model and BU-3DFE. The surface is a height
# field z(x, y) over an elliptical patch (150 mm wide, 190 mm tall): an ellipsoidal cap plus Gaussian bumps.
_FACE_HALF_WIDTH, _FACE_HALF_HEIGHT, _FACE_CENTRE_Y, _FACE_DEPTH = 75.0, 95.0, 10.0, 65.0
# (centre x, centre y, sigma x, sigma y, height) in mm; a bump off the midline is mirrored to the other side.
_FACE_FEATURES = (
    (0.0, -2.0, 9.0, 13.0, 22.0),  # nose: its tip is the highest point of the face
    (0.0, 22.0, 6.0, 16.0, 12.0),  # nose bridge
    (32.0, 30.0, 13.0, 8.0, -10.0),  # eye socket
    (30.0, 45.0, 16.0, 4.0, 5.0),  # brow
    (36.0, -12.0, 18.0, 16.0, 6.0),  # cheek
    (0.0, -42.0, 22.0, 7.0, 5.0),  # lips
    (0.0, -42.0, 20.0, 2.5, -4.0),  # mouth groove
    (0.0, -74.0, 14.0, 8.0, 7.0),  # chin
)
# Each expression at intensity 1: regions (centre x, centre y, sigma x, sigma y) moved by (dx, dy, dz) mm,
# mirrored like the features (dx flips sign); roughly the FACS action units of each emotion.
_FACE_EXPRESSIONS = {
    "anger": ((14.0, 42.0, 10.0, 8.0, (3.0, -5.0, 2.0)), (0.0, -42.0, 18.0, 6.0, (0.0, 0.0, -3.0))),
    "disgust": ((14.0, 8.0, 8.0, 8.0, (0.0, 4.0, 2.0)), (10.0, -36.0, 12.0, 6.0, (0.0, 5.0, 2.0))),
    "fear": ((22.0, 45.0, 14.0, 6.0, (0.0, 6.0, 0.0)), (18.0, -45.0, 12.0, 8.0, (5.0, -2.0, -1.0))),
    "happiness": ((24.0, -40.0, 10.0, 8.0, (4.0, 8.0, 3.0)), (36.0, -12.0, 14.0, 14.0, (0.0, 4.0, 3.0))),
    "sadness": ((12.0, 44.0, 8.0, 6.0, (0.0, 5.0, 0.0)), (24.0, -42.0, 10.0, 8.0, (0.0, -6.0, -1.0))),
    "surprise": ((26.0, 46.0, 20.0, 8.0, (0.0, 9.0, 1.0)), (0.0, -60.0, 24.0, 18.0, (0.0, -16.0, -4.0))),
}


def _bumps(x: np.ndarray, y: np.ndarray, regions) -> list[tuple[np.ndarray, float, object]]:
    """(weight (N,), x side sign, payload) per region and its mirror image when off the midline."""
    out = []
    for cx, cy, sx, sy, payload in regions:
        for side in (1.0, -1.0) if cx else (1.0,):
            out.append((np.exp(-0.5 * (((x - side * cx) / sx) ** 2 + ((y - cy) / sy) ** 2)), side, payload))
    return out


@lru_cache(maxsize=4)
def _face_grid(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (N, 3) float32, faces (M, 3) int64, uv (N, 2) float32 and mirror pairs (N,) of the neutral face."""
    cols, rows = int(_FACE_HALF_WIDTH / spacing), int(_FACE_HALF_HEIGHT / spacing)
    xs = np.arange(-cols, cols + 1) * spacing  # symmetric about x = 0
    ys = _FACE_CENTRE_Y + np.arange(-rows, rows + 1) * spacing
    gx, gy = np.meshgrid(xs, ys)  # (rows = y, cols = x)
    q = (gx / _FACE_HALF_WIDTH) ** 2 + ((gy - _FACE_CENTRE_Y) / _FACE_HALF_HEIGHT) ** 2
    # the grid cells with all four corners on the patch, and the vertices those cells use (none is left alone)
    cells = (q[:-1, :-1] <= 1) & (q[:-1, 1:] <= 1) & (q[1:, :-1] <= 1) & (q[1:, 1:] <= 1)
    keep = np.zeros(q.shape, bool)
    for di, dj in ((0, 0), (0, 1), (1, 0), (1, 1)):
        keep[di : di + cells.shape[0], dj : dj + cells.shape[1]] |= cells
    index = np.full(keep.shape, -1, np.int64)
    index[keep] = np.arange(keep.sum())
    x, y = gx[keep], gy[keep]
    z = -_FACE_DEPTH * (1.0 - np.sqrt(1.0 - 0.95 * q[keep]))  # the cap; 0.95: no vertical wall at the rim
    z = z + sum(w * height for w, _, height in _bumps(x, y, _FACE_FEATURES))
    # two counter-clockwise triangles (seen from +z) per cell
    a, b, c, d = index[:-1, :-1][cells], index[:-1, 1:][cells], index[1:, :-1][cells], index[1:, 1:][cells]
    faces = np.concatenate([np.stack([a, b, d], -1), np.stack([a, d, c], -1)])
    uv = np.stack([(x - xs[0]) / (xs[-1] - xs[0]), (y - ys[0]) / (ys[-1] - ys[0])], -1)
    mirror = index[:, ::-1][keep]  # the grid is symmetric: column j mirrors column -1 - j
    vertices = np.stack([x, y, z], -1).astype(np.float32)
    return vertices, faces, uv.astype(np.float32), mirror


def _expression_field(vertices: np.ndarray, expression: str) -> np.ndarray:
    """(N, 3) float32 displacement of `expression` at intensity 1."""
    if expression not in _FACE_EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; one of {sorted(_FACE_EXPRESSIONS)}")
    field = np.zeros_like(vertices)
    for w, side, (dx, dy, dz) in _bumps(vertices[:, 0], vertices[:, 1], _FACE_EXPRESSIONS[expression]):
        field += w[:, None] * np.array([side * dx, dy, dz], np.float32)
    return field


def face_mesh(expression: str | None = None, intensity: float = 1.0, spacing: float = 2.5):
    """A deterministic face-like triangle mesh, for tests that need "a face" and not a particular face model.

    An elliptical patch 150 mm wide and 190 mm tall (3,565 vertices and 6,864 triangles at the default
    2.5 mm grid spacing, about the size of the Surrey Face Model's 3,448 and 6,736), in millimetres, +y up, +z towards the viewer, mirror-symmetric in x: an
    ellipsoidal cap with a nose (its tip, on the midline, is the highest-z vertex), nose bridge, eye
    sockets, brows, cheeks, lips with a mouth groove and a chin. Triangles are counter-clockwise seen from
    the front.

    Args:
        expression: None (neutral) or one of the six basic emotions ("happiness", "surprise", ...): a smooth
            displacement of the brows, mouth and cheeks by a few millimetres.
        intensity: scales the expression's displacement (0 is neutral).
        spacing: grid spacing in mm (smaller: denser mesh).

    Returns:
        A `Scan` with vertices, faces and uv (per-vertex, in [0, 1]).
    """
    from .scan import Scan

    vertices, faces, uv, _ = _face_grid(float(spacing))
    if expression is not None:
        vertices = vertices + np.float32(intensity) * _expression_field(vertices, expression)
    return Scan(vertices=vertices.copy(), faces=faces.copy(), uv=uv.copy())


def surface_sample(mesh, n: int, seed: int = 0):
    """n points spread uniformly (by area) over the triangles of `mesh` (a `Scan`), as a point cloud `Scan` without
    colours: a scanner that samples the surface instead of meshing it (`affectvlm.data.realism.sample_surface`)."""
    from .data.realism import sample_surface
    from .scan.types import Scan

    cloud, _ = sample_surface(mesh, n, np.random.default_rng(seed))
    return Scan(vertices=cloud.vertices)


def depth_camera_cloud(mesh, pixels: int = 160, distance: float = 600.0, wall: float | None = None):
    """What a depth camera `distance` mm in front of a face's nose sees of `mesh` (a `Scan` in mm, +y up, +z towards
    the viewer): an organized cloud, `pixels` square over 1.2 times the face's width, in the camera's own frame as
    PCL and Open3D write it (x right, y down, z away from the camera) and in metres, NaN where no surface is seen;
    with `wall`, a flat wall that many mm behind the nose fills the background. Returns (the cloud as a `Scan`,
    (rows, columns)) for `write_pcd(..., grid=...)`."""
    from .scan.render import rasterize
    from .scan.types import Scan

    v = mesh.vertices.astype(np.float64)
    centre = np.array([*(v.max(0)[:2] + v.min(0)[:2]) / 2, v[:, 2].max() + distance])  # the camera
    ahead = centre[2] - v[:, 2]  # each vertex's distance along the camera's axis
    # each vertex where the pinhole projects it on the image plane at `distance`, its depth kept for the z-buffer
    seen = np.c_[(v[:, :2] - centre[:2]) * (distance / ahead)[:, None], -ahead]
    extent = 0.6 * float((v.max(0) - v.min(0))[:2].max())
    frags = rasterize(
        mesh.replace(vertices=seen.astype(np.float32)),
        views=[0.0],
        size=pixels,
        extent=extent,
        pivot=(0, 0, 0),
    )
    mask, ahead = frags.mask[0, 0].numpy(), -frags.depth[0, 0].numpy().astype(np.float64)
    if wall is not None:
        ahead, mask = np.where(mask, ahead, distance + wall), np.ones_like(mask)
    grid = (np.arange(pixels) + 0.5) * (2 * extent / pixels) - extent
    x, y = np.meshgrid(grid, grid)  # row 0 at the top of the image, which the camera's +y points down from
    points = np.stack([x * ahead / distance, y * ahead / distance, ahead], axis=-1) / 1000.0
    points[~mask] = np.nan
    return Scan(vertices=points.reshape(-1, 3).astype(np.float32)), (pixels, pixels)


def stray_points(vertices: np.ndarray, count: int, spread: float, seed: int = 0) -> np.ndarray:
    """(count, 3) float32 points scattered about the mean of a face's `vertices` (mm) with `spread` mm std per axis:
    a scanner's flying pixels and background specks."""
    rng = np.random.default_rng(seed)
    return (vertices.mean(axis=0) + rng.normal(0.0, spread, (count, 3))).astype(np.float32)


def wall_behind(
    vertices: np.ndarray, behind: float = 250.0, count: int = 60_000, seed: int = 0
) -> np.ndarray:
    """(count, 3) float32 points of a flat 1 m wall `behind` mm behind the deepest of a face's `vertices` (mm, +z
    towards the viewer), centred on the face: a depth camera's view of the room behind a head."""
    plane = np.random.default_rng(seed).uniform(-500.0, 500.0, (count, 2)) + vertices.mean(axis=0)[:2]
    return np.c_[plane, np.full(count, vertices[:, 2].min() - behind)].astype(np.float32)


def standing_body(
    vertices: np.ndarray, height: float = 1700.0, points: int = 60_000, seed: int = 0
) -> np.ndarray:
    """(points, 3) float32 points on the rest of a person standing below a face's `vertices` (mm, +y up, +z
    towards the viewer): the back of the head, a neck, a torso, two arms and two legs (elliptic cylinders), the feet
    `height` mm below the top of the head, as a whole-body scanner records them. The face is a tenth of the scan."""
    rng = np.random.default_rng(seed)
    (x, top, front), low = vertices.max(axis=0), vertices.min(axis=0)
    cx, cz, r = (x + low[0]) / 2, front - 100.0, (x - low[0]) / 2
    feet, hips, shoulders = top - height, top - 0.52 * height, top - 0.19 * height
    # (centre x, centre z, radius x, radius z, upper y, lower y) of each part
    parts = [
        (cx, cz, r, 90.0, top, low[1]), (cx, cz, 55.0, 55.0, low[1], shoulders), (cx, cz, 170.0, 110.0, shoulders, hips),
        (cx - 215.0, cz, 45.0, 45.0, shoulders, hips), (cx + 215.0, cz, 45.0, 45.0, shoulders, hips),
        (cx - 90.0, cz, 70.0, 70.0, hips, feet), (cx + 90.0, cz, 70.0, 70.0, hips, feet),
    ]  # fmt: skip
    area = np.array([(rx + rz) * (y0 - y1) for _, _, rx, rz, y0, y1 in parts])
    which = rng.choice(len(parts), points, p=area / area.sum())
    a, t = rng.uniform(0.0, 2.0 * np.pi, points), rng.uniform(0.0, 1.0, points)
    cx, cz, rx, rz, y0, y1 = np.asarray(parts, np.float64)[which].T
    body = np.c_[cx + rx * np.sin(a), y0 + (y1 - y0) * t, cz + rz * np.cos(a)]
    # the back of the head: its front half would cover the face
    return body[(which != 0) | (np.cos(a) < 0)].astype(np.float32)


def with_inside(face, behind: float = 6.0):
    """`face` (a mesh Scan in mm, looking along +z) with a second surface `behind` mm behind it, facing the other
    way: the inside of a mouth or of a mask, which a character head exported from a modelling tool carries
    (MakeHuman's does) and no view sees."""
    from .scan import Scan

    v, f = face.vertices, face.faces
    inside = v - np.array([0.0, 0.0, behind], np.float32)
    return Scan(np.r_[v, inside].astype(np.float32), np.r_[f, f[:, ::-1] + len(v)])


def head_drift(frames: list, degrees: float, mm: float, seed: int = 0) -> list:
    """The frames (Scans of a 4D sequence, in mm) with a head's drift added: from the second on, each turned
    about a random axis through the frame's centre and moved, by a random walk of `degrees` and `mm` (std per
    frame; the turn and the move add up over the frames), as a subject's head drifts and nods in front of a 4D
    scanner."""
    from .scan.register import rotation_of

    rng = np.random.default_rng(seed)
    turn, shift, out = np.eye(3), np.zeros(3), [frames[0]]
    for frame in frames[1:]:
        axis = rng.normal(size=3)
        turn = rotation_of(axis / np.linalg.norm(axis) * np.radians(rng.normal(0.0, degrees))) @ turn
        shift = shift + rng.normal(0.0, mm, 3)
        centre = frame.vertices.mean(axis=0)
        moved = (frame.vertices - centre) @ turn.T + centre + shift
        out.append(frame.replace(vertices=moved.astype(np.float32)))
    return out


@lru_cache(maxsize=1)
def toy_face_model():
    """A stand-in for the Surrey Face Model built on `face_mesh`, for tests of what the generator writes
    (dataset layouts, readers, caches) rather than of the face model itself.

    Four smooth identity modes (width, height, nose size, depth), orthonormalised, with variances that give
    a few millimetres of identity variation as the SFM's first components do; the six expressions of
    `face_mesh`; exact mirror pairs from the symmetric grid.

    Returns:
        An `affectvlm.data.sfm.SurreyFaceModel` (source: a dummy path naming this function).
    """
    from .data.sfm import EXPRESSION_NAMES, SurreyFaceModel

    vertices, faces, uv, mirror = _face_grid(2.5)
    x, y, z = vertices.T
    nose = _bumps(x, y, _FACE_FEATURES[:1])[0][0]
    zeros = np.zeros_like(x)
    modes = [(x, zeros, zeros), (zeros, y - _FACE_CENTRE_Y, zeros), (zeros, zeros, nose), (zeros, zeros, z)]
    basis, _ = np.linalg.qr(np.stack([np.stack(m, -1).reshape(-1) for m in modes], -1))  # (3N, 4)
    return SurreyFaceModel(
        mean=vertices,
        basis=basis.astype(np.float32),
        eigenvalues=np.array([60000.0, 30000.0, 10000.0, 7000.0], np.float32),
        triangles=faces,
        texcoords=uv,
        expressions=np.stack([_expression_field(vertices, name) for name in EXPRESSION_NAMES]),
        symmetry=mirror,
        source=Path("affectvlm.testing.toy_face_model"),
    )


def _eigen(matrix: np.ndarray) -> bytes:
    """An Eigen matrix as eos's cereal archive stores it: int32 rows, int32 cols, column-major float32."""
    matrix = np.asarray(matrix, "<f4")
    return struct.pack("<ii", *matrix.shape) + matrix.T.tobytes()


def fake_sfm_files(num_vertices: int = 4, num_components: int = 2, seed: int = 0) -> dict[str, bytes]:
    """The eos files of a tiny random morphable model, in the real formats: file name -> bytes.

    ``sfm_shape_3448.bin`` (cereal MorphableModel version 1), ``expression_blendshapes_3448.bin`` (the six
    expressions) and ``sfm_reference_symmetry.txt`` (vertices 1 and 2 mirror each other), for testing the
    conversion and download route of `affectvlm.data.sfm` without the real, licence-restricted files.
    """
    from .data.sfm import EXPRESSION_NAMES, SYMMETRY_FILE

    rng = np.random.default_rng(seed)
    n3 = 3 * num_vertices
    triangles = np.array([[0, 1, 2], [1, 3, 2]], "<i4")
    shape = struct.pack("<I", 1)  # MorphableModel class version
    shape += _eigen(rng.normal(size=(n3, 1))) + _eigen(rng.normal(size=(n3, num_components)))
    shape += _eigen(rng.uniform(1, 9, size=(num_components, 1))) + struct.pack("<Q", len(triangles))
    shape += triangles.tobytes()
    empty_colour_model = b"".join(_eigen(np.zeros(size)) for size in ((0, 1), (0, 0), (0, 1))) + bytes(8)
    shape += empty_colour_model  # mean, basis, eigenvalues, then a uint64 0 triangles
    shape += struct.pack("<Q", num_vertices) + rng.uniform(size=(num_vertices, 2)).astype("<f8").tobytes()
    blendshapes = struct.pack("<Q", len(EXPRESSION_NAMES))
    for name in EXPRESSION_NAMES:
        blendshapes += struct.pack("<Q", len(name)) + name.encode() + _eigen(rng.normal(size=(n3, 1)))
    return {
        "sfm_shape_3448.bin": shape,
        "expression_blendshapes_3448.bin": blendshapes,
        SYMMETRY_FILE: b"2 # 1-based: vertex 1 mirrors vertex 2\n1\n",
    }


__all__ = [
    "TINY_VOCAB_SIZE",
    "depth_camera_cloud",
    "face_mesh",
    "fake_sfm_files",
    "stray_points",
    "surface_sample",
    "tiny_clip_config",
    "tiny_config",
    "tiny_processor",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "toy_face_model",
    "vit_b32_clip_config",
    "wall_behind",
    "with_inside",
]
