"""The head's own motion in a 4D sequence, found so that it can be taken out before rank pooling.

A face scanned for seconds moves: BU-4DFE's subjects drift by a few degrees and millimetres over a sequence, and
BP4D's, talking and laughing, by more. A dynamic image pools the frames as they lie, so a head that nods by 3
degrees paints its own outline over the expression's change. `follow` finds the rigid motion that puts a later
frame back onto the first: iterative closest points, point to plane, over the parts of the face that expressions
move least (the nose, the forehead and the sides of the face: `still_parts`), each step fitting the closest `_KEEP` of
the pairs. Inner cheeks, brows and eyelids are left out: with them, a smile's lifted cheeks were partly taken for a
nod and taken out (the happy example sequence's score fell from 0.93 to 0.76); the sides halved the 90th
percentile of the registration's error on synthetic sequences with a known drift (1.5-1.7 mm to 0.8). Nearest
neighbours are found by brute force between 600 of the frame's points and 1,200 of the first's (torch; about 7 ms a
frame on 2 CPU threads).
"""

from __future__ import annotations

import numpy as np
import torch

_SOURCE_POINTS = 600  # of the frame's; the first frame's: `still_parts`' default, 1200
_ITERATIONS = 20
_NEIGHBOURS = 10  # points that give each reference point its normal
_KEEP = 0.7  # the closest share of pairs that each step fits
# What an expression moves least (canonical frame, mm, the nose tip at 0, +y up): the nose from its tip to its bridge,
# the forehead above the brows and the sides of the face (temples, outer cheekbones) from just below the tip up,
# within `_REACH_MM` of the tip. The inner cheeks (a smile lifts them), the brows and eyelids (surprise, anger) and
# the jaw are left out.
_NOSE_HALF_WIDTH_MM, _NOSE_MM, _FOREHEAD_MM, _SIDES_MM = 18.0, (-8.0, 45.0), 50.0, 45.0
_REACH_MM = 90.0
_MIN_POINTS = 64
_DONE_MM = 0.01  # a step that moves no point by more than this ends the search
# a fit that turns the head by more than this, or moves it further, from the frame before's motion is no head's
# motion between two frames (a fraction of a second apart): the frame before's motion is kept
_MAX_STEP_DEGREES, _MAX_STEP_MM = 15.0, 30.0


def still_parts(points: np.ndarray, count: int = 1200) -> np.ndarray:
    """(K, 3) float64: at most `count` of `points` (mm, canonical frame, the nose tip at 0) on the nose, the forehead
    and the sides of the face."""
    p = np.asarray(points, dtype=np.float64)
    x, y = np.abs(p[:, 0]), p[:, 1]
    nose = (x <= _NOSE_HALF_WIDTH_MM) & (y >= _NOSE_MM[0]) & (y <= _NOSE_MM[1])
    sides = (x >= _SIDES_MM) & (y >= _NOSE_MM[0])
    p = p[(nose | sides | (y >= _FOREHEAD_MM)) & (np.einsum("ij,ij->i", p, p) <= _REACH_MM**2)]
    return p[np.unique(np.linspace(0, len(p) - 1, min(len(p), count)).astype(int))] if len(p) else p


def normals(points: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals of `points` (N, 3): each point's `_NEIGHBOURS` nearest, their direction of least spread."""
    p = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    near = torch.cdist(p, p).topk(min(_NEIGHBOURS, len(p)), largest=False).indices  # (N, k)
    around = p[near] - p[near].mean(1, keepdim=True)
    _, vectors = torch.linalg.eigh(around.transpose(1, 2) @ around)  # ascending eigenvalues
    return vectors[:, :, 0].double().numpy()


def rotation_of(omega: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation by the vector `omega` (its length in radians, about its direction; Rodrigues)."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = omega / angle
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def follow(
    points: np.ndarray,
    reference: np.ndarray,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    reference_normals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3, 3), shift (3,)): the head's motion from a frame back to the first, `points @ rotation.T + shift`.

    Args:
        points: a later frame's vertices (mm, in the first frame's canonical frame, its nose tip at 0).
        reference: `still_parts` of the first frame's vertices (the same frame).
        start: the previous frame's motion, to start from (a head drifts a little from frame to frame).
        reference_normals: `normals(reference)`, when already known.

    Point-to-plane steps (each pair's distance along the reference's normal, linearised in a small turn):
    they converge in a few steps where point-to-point ones crawl along the face's smooth surface.

    Returns `start` (the identity when None) when either side has fewer than `_MIN_POINTS` points on those parts
    (`still_parts`), or when the fit is further from it than `_MAX_STEP_DEGREES` or `_MAX_STEP_MM` (no head's
    motion between two frames: the frame is of something else, or too unlike the first to register). A head that
    turns steadily is followed frame by frame, however far it turns in all.
    """
    start = start or (np.eye(3), np.zeros(3))
    rotation, shift = start
    # the still parts as `start` sees them, in the frame's own coordinates
    source = (still_parts(points @ rotation.T + shift, _SOURCE_POINTS) - shift) @ rotation
    if len(source) < _MIN_POINTS or len(reference) < _MIN_POINTS:
        return start
    n = normals(reference) if reference_normals is None else reference_normals
    target = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    for _ in range(_ITERATIONS):
        moved = source @ rotation.T + shift
        distance, nearest = torch.cdist(torch.from_numpy(moved.astype(np.float32)), target).min(1)
        keep = (distance <= torch.quantile(distance, _KEEP)).numpy()
        m, q, normal = moved[keep], reference[nearest.numpy()[keep]], n[nearest.numpy()[keep]]
        a = np.concatenate([np.cross(m, normal), normal], axis=1)  # (K, 6): d residual / d (turn, shift)
        residual = np.einsum("ij,ij->i", m - q, normal)
        step = np.linalg.solve(a.T @ a + 1e-6 * len(m) * np.eye(6), -a.T @ residual)
        turn = rotation_of(step[:3])
        rotation, shift = turn @ rotation, shift @ turn.T + step[3:]
        if np.abs(np.cross(step[:3], m)).max() + np.abs(step[3:]).max() < _DONE_MM:
            break
    turn = np.degrees(np.arccos(np.clip((np.trace(rotation @ start[0].T) - 1.0) / 2.0, -1.0, 1.0)))
    if turn > _MAX_STEP_DEGREES or np.linalg.norm(shift - start[1]) > _MAX_STEP_MM:
        return start
    return rotation, shift


def surface_gap(points: np.ndarray, reference: np.ndarray, reference_normals: np.ndarray | None = None) -> float:
    """Median distance (mm) of `points`' still parts (`still_parts`, `_SOURCE_POINTS` of them) from the surface that
    `reference` (the first frame's `still_parts`) samples, along its normals: both in the first frame's canonical
    frame, the head's motion taken out. Frames of one face stay within a millimetre of each other there, whatever
    the expression; two people's noses and foreheads lie several apart (`affectvlm.scan.recipe.ONE_FACE_MM`). NaN
    when either side has fewer than `_MIN_POINTS` points on those parts."""
    source = still_parts(points, _SOURCE_POINTS)
    if len(source) < _MIN_POINTS or len(reference) < _MIN_POINTS:
        return float("nan")
    n = normals(reference) if reference_normals is None else reference_normals
    target = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    nearest = torch.cdist(torch.from_numpy(source.astype(np.float32)), target).argmin(1).numpy()
    return float(np.median(np.abs(np.einsum("ij,ij->i", source - reference[nearest], n[nearest]))))
