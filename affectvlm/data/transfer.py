"""The ICT FaceKit's expression shapes carried onto the Surrey Face Model through a dense correspondence
(and, in reverse, the SFM's whole-emotion blendshapes onto the ICT FaceKit: :func:`sfm_to_ict`).

The SFM has six whole-emotion blendshapes and no action units; the ICT FaceKit has 53 ARKit shapes with a
FACS table (:data:`affectvlm.data.aus.ICT_AU_SHAPES`). To give SFM identities real action units, each ICT
shape's displacement is carried onto the SFM's vertices:

1. **Landmarks.** The 49 iBUG landmarks both models define (the SFM's from eos's ``ibug_to_sfm.txt``, the
   ICT's ``landmarks68``): brows, nose, eyes, lips and chin.
2. **Similarity.** The ICT neutral face is moved, turned and scaled onto the SFM mean by least squares on
   those landmarks (Umeyama).
3. **Warp.** A thin-plate spline (3D, kernel ``r``) then bends it so that its landmarks land on the SFM's
   exactly, and everything between follows smoothly: the two surfaces now nearly coincide.
4. **Nearest surface.** Every SFM vertex takes the closest point of the warped ICT face and head (a triangle
   and barycentric weights).
5. **Transfer.** An ICT displacement, turned and scaled by the similarity of step 2, is read at that point.
   Vertices farther than ``near`` mm from the ICT surface (the SFM's closed eyes and mouth line over the
   kit's open eye holes) fade out to no motion at ``far`` mm.

The warp's own local stretch is not applied to the displacements (the faces differ by a few millimetres);
what this gives is displacement transfer, not deformation transfer, which is enough for the small motions of
facial expressions. The result is one (53, N, 3) array computed once per generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# iBUG 68 landmark (1-based) -> SFM vertex (0-based), from eos's share/ibug_to_sfm.txt (Apache-2.0). The jaw
# contour (1-8, 10-17) and two inner-lip points (61, 65) are not defined on the SFM reference.
SFM_IBUG_LANDMARKS: dict[int, int] = {
    9: 33, 18: 225, 19: 229, 20: 233, 21: 2086, 22: 157, 23: 590, 24: 2091, 25: 666, 26: 662, 27: 658,
    28: 2842, 29: 379, 30: 272, 31: 114, 32: 100, 33: 2794, 34: 270, 35: 2797, 36: 537, 37: 177, 38: 172,
    39: 191, 40: 181, 41: 173, 42: 174, 43: 614, 44: 624, 45: 605, 46: 610, 47: 607, 48: 606, 49: 398,
    50: 315, 51: 413, 52: 329, 53: 825, 54: 736, 55: 812, 56: 841, 57: 693, 58: 411, 59: 264, 60: 431,
    62: 416, 63: 423, 64: 828, 66: 817, 67: 442, 68: 404,
}  # fmt: skip


@dataclass(frozen=True)
class Correspondence:
    """Where each target vertex sits on the source surface, and how source motion maps into the target frame.

    Attributes:
        triangles: (P,) source triangle of each target vertex's closest point.
        barycentric: (P, 3) float64 weights of that point in its triangle's corners.
        distance: (P,) float64 mm from the target vertex to that point (after alignment and warp).
        weight: (P,) float64 in [0, 1]: how much of the source motion a vertex takes (distance fade-out).
        linear: (3, 3) source-frame displacement -> target frame (rotation times scale, row vectors).
    """

    triangles: np.ndarray
    barycentric: np.ndarray
    distance: np.ndarray
    weight: np.ndarray
    linear: np.ndarray

    def transfer(self, source_faces: np.ndarray, displacement: np.ndarray) -> np.ndarray:
        """(S, 3) or (E, S, 3) source displacements -> (P, 3) or (E, P, 3) float32 target displacements;
        `source_faces` are the source triangles (the ones the correspondence was built on)."""
        corners = source_faces[self.triangles]  # (P, 3)
        at = np.einsum("pc,...pcd->...pd", self.barycentric, displacement[..., corners, :])
        return (at @ self.linear * self.weight[:, None]).astype(np.float32)


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale, rotation and shift with ``target ~ scale * source @ rotation + shift`` (Umeyama;
    a proper rotation, no reflection). `source`, `target`: (L, 3) corresponding points."""
    ms, mt = source.mean(0), target.mean(0)
    s, t = source - ms, target - mt
    u, sigma, vt = np.linalg.svd(s.T @ t)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / (s**2).sum())
    return scale, rotation, mt - scale * ms @ rotation


def thin_plate_warp(controls: np.ndarray, targets: np.ndarray, points: np.ndarray, smooth: float = 0.0):
    """The 3D thin-plate spline (kernel ``r``) taking `controls` (L, 3) to `targets`, applied to `points`."""
    n = len(controls)
    k = np.linalg.norm(controls[:, None] - controls[None], axis=-1) + smooth * np.eye(n)
    p = np.hstack([np.ones((n, 1)), controls])
    system = np.block([[k, p], [p.T, np.zeros((4, 4))]])
    coef = np.linalg.solve(system, np.vstack([targets, np.zeros((4, 3))]))
    out = np.empty_like(points, dtype=np.float64)
    for i in range(0, len(points), 4096):
        x = points[i : i + 4096]
        kernel = np.linalg.norm(x[:, None] - controls[None], axis=-1)
        out[i : i + 4096] = kernel @ coef[:n] + np.hstack([np.ones((len(x), 1)), x]) @ coef[n:]
    return out


def _closest_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return a + t[..., None] * ab, t


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Closest points of triangles (a, b, c) to points p (all (..., 3), broadcast): (distance (...),
    barycentric (..., 3)). The plane projection where it falls inside, else the nearest of the three edges."""
    e0, e1, w = b - a, c - a, p - a
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (w * e0).sum(-1), (w * e1).sum(-1)
    det = np.maximum(d00 * d11 - d01 * d01, 1e-12)
    v, u = (d11 * d20 - d01 * d21) / det, (d00 * d21 - d01 * d20) / det
    inside = (v >= 0) & (u >= 0) & (v + u <= 1)
    bary = [np.stack([1 - v - u, v, u], -1)]
    dist = [np.where(inside, np.linalg.norm(a + v[..., None] * e0 + u[..., None] * e1 - p, axis=-1), np.inf)]
    for x, y, slots in ((a, b, (0, 1)), (b, c, (1, 2)), (c, a, (2, 0))):
        q, t = _closest_on_segment(p, x, y)
        weights = np.zeros(t.shape + (3,))
        weights[..., slots[0]], weights[..., slots[1]] = 1 - t, t
        bary.append(weights)
        dist.append(np.linalg.norm(q - p, axis=-1))
    dist = np.stack(dist)
    best = np.argmin(dist, axis=0)[None]
    return np.take_along_axis(dist, best, 0)[0], np.take_along_axis(np.stack(bary), best[..., None], 0)[0]


def nearest_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 24):
    """Each point's closest point on the mesh: (triangle (P,), barycentric (P, 3), distance (P,)), searched
    among the `candidates` triangles whose centroids are nearest."""
    centroids = vertices[faces].mean(1)
    tri_out, bary_out, dist_out = [], [], []
    k = min(candidates, len(faces))
    for i in range(0, len(points), 512):
        p = points[i : i + 512]
        d2 = ((p[:, None] - centroids[None]) ** 2).sum(-1)
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]  # (B, k)
        corners = vertices[faces[near]]  # (B, k, 3, 3)
        dist, bary = closest_on_triangles(
            p[:, None], corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
        )
        best = np.argmin(dist, axis=1)
        rows = np.arange(len(p))
        tri_out.append(near[rows, best])
        bary_out.append(bary[rows, best])
        dist_out.append(dist[rows, best])
    return np.concatenate(tri_out), np.concatenate(bary_out), np.concatenate(dist_out)


def correspond(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    source: np.ndarray,
    source_faces: np.ndarray,
    source_landmarks: np.ndarray,
    near: float = 2.0,
    far: float = 6.0,
) -> Correspondence:
    """The dense correspondence of `target` (P, 3) vertices on the `source` mesh (S, 3) with `source_faces`,
    from corresponding landmark vertex indices (L,) of each (see the module docstring for the steps)."""
    target, source = np.asarray(target, np.float64), np.asarray(source, np.float64)
    scale, rotation, shift = similarity(source[source_landmarks], target[target_landmarks])
    aligned = scale * source @ rotation + shift
    warped = thin_plate_warp(aligned[source_landmarks], target[target_landmarks], aligned, smooth=1.0)
    tri, bary, dist = nearest_surface(target, warped, source_faces)
    weight = np.clip((far - dist) / (far - near), 0.0, 1.0)
    return Correspondence(tri, bary, dist, weight, scale * rotation)


def _shared_landmarks(ict_landmarks68) -> tuple[np.ndarray, np.ndarray]:
    """(SFM vertex, ICT vertex) index arrays of the iBUG landmarks both models define."""
    ibug = sorted(SFM_IBUG_LANDMARKS)
    sfm_marks = np.array([SFM_IBUG_LANDMARKS[i] for i in ibug])
    return sfm_marks, np.asarray(ict_landmarks68)[np.array(ibug) - 1]


def ict_to_sfm(
    sfm_mean: np.ndarray, ict_neutral: np.ndarray, ict_faces: np.ndarray, ict_landmarks68
) -> Correspondence:
    """The correspondence of the SFM mean's vertices on the ICT FaceKit's face (both in mm) through the iBUG
    landmarks they share (:data:`SFM_IBUG_LANDMARKS`; `ict_landmarks68` 0-based, Multi-PIE order)."""
    sfm_marks, ict_marks = _shared_landmarks(ict_landmarks68)
    return correspond(sfm_mean, sfm_marks, ict_neutral, ict_faces, ict_marks)


def sfm_to_ict(
    ict_neutral: np.ndarray, ict_landmarks68, sfm_mean: np.ndarray, sfm_triangles: np.ndarray
) -> Correspondence:
    """The reverse: the ICT FaceKit's vertices on the SFM mean's surface, to carry the SFM's six whole-emotion
    blendshapes onto ICT identities (a third expression recipe). The kit's head, neck and eye holes lie off
    the SFM's face and take no motion (the `far` fade-out)."""
    sfm_marks, ict_marks = _shared_landmarks(ict_landmarks68)
    return correspond(ict_neutral, ict_marks, sfm_mean, sfm_triangles, sfm_marks)


def harmonic_fill(displacement: np.ndarray, faces: np.ndarray, free: np.ndarray, iterations: int = 300):
    """(..., P, 3) displacements with the `free` (P,) vertices' values replaced by the mean of their mesh
    neighbours', repeated (Jacobi steps towards the harmonic fill from the other vertices): motion carried
    onto vertices the source surface does not reach (a mouth's inside, an eye socket) follows the motion
    around them instead of fading to none and tearing the surface."""
    d = np.asarray(displacement, dtype=np.float64)
    lead, (n, _) = d.shape[:-2], d.shape[-2:]
    flat = np.moveaxis(d, -2, 0).reshape(n, -1).copy()  # (P, K)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    directed = np.concatenate([edges, edges[:, ::-1]])
    directed = directed[np.argsort(directed[:, 0], kind="stable")]
    sources, starts, degree = np.unique(directed[:, 0], return_index=True, return_counts=True)
    free = np.asarray(free, bool)
    update = free[sources]
    targets, counts = sources[update], degree[update, None]
    for _ in range(iterations):
        sums = np.add.reduceat(flat[directed[:, 1]], starts, axis=0)  # (sources, K) neighbour sums
        flat[targets] = sums[update] / counts
    out = np.moveaxis(flat.reshape(n, *lead, 3), 0, -2) if lead else flat.reshape(n, 3)
    return out.astype(np.float32)
