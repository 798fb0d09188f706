"""Where on the face a decision came from: occlusion relevance on the views, carried back to the scan.

    from affectvlm.explain import explain
    result = explain(predictor, "face.ply")            # the top label; or label="anger", labels=[...]
    result.write_glb("relevance.glb")                  # the normalised scan painted by relevance
    result.overlays                                    # (V, H, W, 3) uint8 heat maps over the views

`explain_views` slides a background-coloured square over one view at a time and records how much the label's
fused score (all views together) drops: positive relevance means hiding that region lowers the label. By default
the other views stay intact (what this view's region adds to the rest); with `hide="surface"` (scans only) the
square hides the part of the face under it in every view that shows it (the vertex ids of each pixel,
`surface_ids`), as removing that part of the scan would, so a feature seen in all three views is not masked by
the other two. `relevance_to_vertices` carries the per-pixel maps back to the scan's vertices through the
renderer's per-pixel triangle ids, rendered with exactly the recipe's views, size and extent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .scan.render import rasterize
from .scan.types import InputError, Scan

__all__ = [
    "HIDE",
    "SCORES",
    "Explanation",
    "Reader",
    "colormap",
    "explain",
    "explain_prepared",
    "explain_views",
    "fused_logits",
    "occlusion_grid",
    "overlay",
    "paint",
    "relevance_to_vertices",
    "surface_ids",
    "write_glb",
]

# What `explain_views` measures the drop of: the label's fused logit, its probability, or its log-probability.
SCORES = ("logit", "prob", "log_prob")
# What one occlusion window hides of a scan: its square in one view ("view", the default), or the part of the
# face under it in every view that shows it ("surface"; docs/RESULTS.md compares the two).
HIDE = ("view", "surface")


def occlusion_grid(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of a `patch`-wide window sliding by `stride` over `size` pixels, the last flush with the
    edge (every pixel is covered)."""
    if patch >= size:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else [*starts, size - patch]


def _label_score(logits: torch.Tensor, probs: torch.Tensor, label_index: int, score: str) -> torch.Tensor:
    if score == "logit":
        return logits[:, label_index].float()
    if score == "prob":
        return probs[:, label_index].float()
    return logits.float().log_softmax(dim=-1)[:, label_index]


def fused_logits(model, view_embeds: torch.Tensor, class_embeds: torch.Tensor, view_mask: torch.Tensor):
    """`model.score`'s (B, C) logits and probabilities from (B, V, D) view embeddings already computed (so a view
    left intact is encoded once, not once per occluded copy of another view): the fused logit
    `scale * <normalize(sum_v w_v e_v), t_c>`."""
    _, weights = model.fuse(view_embeds, view_mask)
    fused = (weights[..., None] * view_embeds).sum(dim=1)
    fused = fused / fused.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scale = model.logit_scale / model.config.temperature  # as `score`: the calibration temperature
    logits = scale * fused @ class_embeds.to(device=fused.device, dtype=fused.dtype).T
    return logits, logits.softmax(dim=-1)


@torch.no_grad()
def explain_views(
    model,
    processor,
    views: torch.Tensor,
    class_embeds: torch.Tensor,
    label_index: int,
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill: int = 0,
    score: str = "logit",
    view_mask: torch.Tensor | None = None,
    surface: np.ndarray | None = None,
    batch_size: int = 512,
    companion: Reader | None = None,
) -> torch.Tensor:
    """Occlusion relevance (V, H, W) float32 of `label_index` on each of the (V, H, W, 3) uint8 `views`.

    A `patch`-pixel square (default a sixth of the image side) of grey level `fill` (default 0, the renderer's
    background) slides by `stride` (default half the patch) over one view at a time: the fused score of all
    views is what is explained. Without `surface` the other views stay intact. With `surface`, (V, H, W, K)
    int64 ids of the scan vertices each pixel shows (-1 on the background; `surface_ids`), the square hides
    that part of the face in every view that shows it, as removing it from the scan would: a feature seen in
    all three views (the brows) then counts as much as one seen in a single view. Only positions touching the
    face (non-background pixels) are scored, `batch_size` occluded samples per forward pass of the vision
    tower. Each pixel gets the mean drop of the label's `score` ("logit", "prob" or "log_prob") over the
    positions covering it: positive = hiding it lowers the label. Background pixels and views missing from
    `view_mask` (V,) get 0. With a `companion` (`Reader`: a second model and its views of the same sample drawn
    otherwise, pixel for pixel where `views` are), each window hides the same pixels of both models' views and
    the score explained is the pooled answer's (`affectvlm.companion`: the logits `(1 - w) main + w companion`).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    views = torch.as_tensor(views).cpu()
    if views.dim() != 4 or views.shape[-1] != 3 or views.dtype != torch.uint8:
        raise ValueError(f"views must be a (V, H, W, 3) uint8 tensor; got {tuple(views.shape)} {views.dtype}")
    nviews, height, width = views.shape[:3]
    if not 0 <= label_index < len(class_embeds):
        raise ValueError(f"label_index {label_index} is out of range for {len(class_embeds)} classes")
    patch = patch or max(2, round(min(height, width) / 6))
    stride = stride or max(1, patch // 2)
    device = model.device
    mask = torch.ones(nviews, dtype=torch.bool) if view_mask is None else torch.as_tensor(view_mask).view(-1)
    mask = mask.to(device=device, dtype=torch.bool)[None]  # (1, V)
    readers = [Reader(model, processor, views, class_embeds, 1.0 - (companion.weight if companion else 0.0))]
    if companion is not None:
        if tuple(companion.views.shape) != tuple(views.shape):
            raise ValueError(f"the companion's views {tuple(companion.views.shape)} differ from {tuple(views.shape)}")
        readers.append(companion)
    base_embeds = [r.embeddings(mask) for r in readers]
    base = _label_score(*_pooled_logits(readers, base_embeds, mask), label_index, score)
    foreground = views.amax(dim=-1) > 0  # (V, H, W)
    windows = [
        (v, y, x)
        for v in range(nviews)
        if bool(mask[0, v])
        for y in occlusion_grid(height, patch, stride)
        for x in occlusion_grid(width, patch, stride)
        if bool(foreground[v, y : y + patch, x : x + patch].any())
    ]
    hide = _OcclusionMasks(views.shape[:3], patch, None if surface is None else torch.as_tensor(surface))
    total = torch.zeros(nviews, height, width)
    count = torch.zeros(nviews, height, width)
    step = max(1, math.ceil(len(windows) / max(1, math.ceil(len(windows) / batch_size))))  # equal batches
    for start in range(0, len(windows), step):
        chunk = windows[start : start + step]
        hidden = (
            torch.stack([hide(*window) for window in chunk]) & mask.cpu()[0, :, None, None]
        )  # (B, V, H, W)
        embeds = [r.occluded(hidden, e, fill) for r, e in zip(readers, base_embeds)]
        logits, probs = _pooled_logits(readers, embeds, mask.expand(len(chunk), -1))
        drops = (base - _label_score(logits, probs, label_index, score)).cpu()
        for (v, y, x), drop in zip(chunk, drops.tolist()):
            total[v, y : y + patch, x : x + patch] += drop
            count[v, y : y + patch, x : x + patch] += 1
    return torch.where(foreground & (count > 0), total / count.clamp_min(1), torch.zeros(()))


@dataclass
class Reader:
    """One model's reading of a sample for `explain_views`: the model, its processor, the (V, H, W, 3) uint8 views
    it reads and its (C, D) class embeddings; `weight`: its share of the pooled logits."""

    model: object
    processor: object
    views: torch.Tensor
    class_embeds: torch.Tensor
    weight: float = 1.0

    def embeddings(self, mask: torch.Tensor) -> torch.Tensor:
        """(1, V, D) embeddings of the intact views."""
        model = self.model
        pixels = self.processor.normalize_views(torch.as_tensor(self.views).cpu()[None])
        return model.get_view_embeddings(pixels.to(model.device, model.dtype), mask.to(model.device))

    def occluded(self, hidden: torch.Tensor, base_embeds: torch.Tensor, fill: int) -> torch.Tensor:
        views = torch.as_tensor(self.views).cpu()
        return _occluded_embeddings(self.model, self.processor, views, hidden, base_embeds, fill)


def _pooled_logits(readers: list[Reader], embeds: list[torch.Tensor], mask: torch.Tensor):
    """(B, C) logits `sum_r weight_r * logits_r` of the readers' fused scores, and their softmax: for two readers
    the log-linear pool of their probabilities (`affectvlm.companion.pool`)."""
    total = None
    for reader, reader_embeds in zip(readers, embeds):
        logits, _ = fused_logits(reader.model, reader_embeds, reader.class_embeds, mask.to(reader_embeds.device))
        logits = reader.weight * logits.float().cpu()
        total = logits if total is None else total + logits
    return total, total.softmax(dim=-1)


class _OcclusionMasks:
    """The (V, H, W) pixels one occlusion window hides: its square, plus, given the pixels' vertex ids
    (`surface`), every pixel of any view that shows one of the vertices under the square."""

    def __init__(self, shape, patch: int, surface: torch.Tensor | None):
        self.shape, self.patch, self.surface = tuple(shape), patch, surface
        if surface is not None:
            if surface.dim() != 4 or tuple(surface.shape[:3]) != self.shape:
                raise ValueError(
                    f"surface must be (V, H, W, K) for views {self.shape}; got {tuple(surface.shape)}"
                )
            self.num_vertices = int(surface.max()) + 2  # the last slot collects the background's -1

    def __call__(self, v: int, y: int, x: int) -> torch.Tensor:
        hidden = torch.zeros(self.shape, dtype=torch.bool)
        hidden[v, y : y + self.patch, x : x + self.patch] = True
        if self.surface is None:
            return hidden
        under = self.surface[v, y : y + self.patch, x : x + self.patch].reshape(-1)
        chosen = torch.zeros(self.num_vertices, dtype=torch.bool)
        chosen[under[under >= 0]] = True
        return hidden | chosen[self.surface].any(dim=-1)  # -1 indexes the last slot, never chosen


def _occluded_embeddings(model, processor, views, hidden, base_embeds, fill: int) -> torch.Tensor:
    """(B, V, D) view embeddings of B copies of the (V, H, W, 3) `views` with the (B, V, H, W) `hidden` pixels
    set to `fill`: only the views a copy changes are encoded again."""
    embeds = base_embeds.repeat(len(hidden), 1, 1)
    sample, view = torch.nonzero(hidden.flatten(2).any(dim=-1), as_tuple=True)
    if len(sample):
        occluded = views[view].clone()  # (P, H, W, 3)
        occluded[hidden[sample, view]] = fill
        pixels = processor.normalize_views(occluded[:, None]).to(model.device, model.dtype)
        ones = torch.ones(len(sample), 1, dtype=torch.bool, device=model.device)
        embeds[sample.to(model.device), view.to(model.device)] = model.get_view_embeddings(pixels, ones)[:, 0]
    return embeds


def surface_ids(scan: Scan, recipe, **render_kwargs) -> np.ndarray:
    """(V, H, W, K) int64 ids of the vertices each pixel of the recipe's views of the normalised `scan` shows
    (its triangle's three for a mesh, K = 3; its point for a cloud, K = 1), -1 on the background: what lets
    `explain_views` hide one part of the face in every view (`render_kwargs` as `relevance_to_vertices`)."""
    frags = rasterize([scan], recipe._render_kwargs()["views"], recipe.size, **render_kwargs)
    covered, face = frags.mask[0].cpu(), frags.face[0].cpu().long().clamp_min(0)
    ids = face[..., None] if scan.is_point_cloud else torch.as_tensor(scan.faces, dtype=torch.long)[face]
    return torch.where(covered[..., None], ids, torch.full_like(ids, -1)).numpy()


def _resample(view_maps: torch.Tensor, foreground: torch.Tensor, size: int) -> torch.Tensor:
    """(V, H, W) maps -> (V, size, size) by bilinear interpolation of the foreground values only (the background
    zeros do not bleed into the face's edge)."""
    if view_maps.shape[-1] == size and view_maps.shape[-2] == size:
        return view_maps
    values = F.interpolate((view_maps * foreground)[:, None], size=(size, size), mode="bilinear")[:, 0]
    weight = F.interpolate(foreground.float()[:, None], size=(size, size), mode="bilinear")[:, 0]
    return torch.where(weight > 1e-6, values / weight.clamp_min(1e-6), torch.zeros(()))


def relevance_to_vertices(
    scan: Scan, recipe, view_maps, *, upsample: int | None = None, **render_kwargs
) -> np.ndarray:
    """Per-pixel relevance (V, H, W) of the recipe's views of the normalised `scan` -> (N,) float32 per vertex.

    The scan is rasterised with the recipe's views and extent (`render_kwargs`: the `extent`, `pivot`,
    `point_radius` given to `recipe.views_of`, if any) at `upsample` times the recipe's size (default: at least
    192 px, so that small triangles get pixels; the maps are interpolated up). Each covered pixel gives its
    relevance to its triangle's three vertices weighted by barycentrics (to its point for point clouds); a
    vertex gets the weighted mean per view, averaged over the views it is visible in, and 0 where it is seen in
    none.
    """
    maps = torch.as_tensor(np.asarray(view_maps, dtype=np.float32))
    kwargs = recipe._render_kwargs()
    if maps.dim() != 3 or maps.shape[-2:] != (recipe.size, recipe.size):
        raise ValueError(f"view_maps must be (V, {recipe.size}, {recipe.size}); got {tuple(maps.shape)}")
    upsample = upsample or max(1, math.ceil(192 / recipe.size))
    size = recipe.size * upsample
    frags = rasterize([scan], kwargs["views"], size, **render_kwargs)
    coarse = frags if upsample == 1 else rasterize([scan], kwargs["views"], recipe.size, **render_kwargs)
    if frags.mask.shape[1] != maps.shape[0]:
        raise ValueError(f"{maps.shape[0]} view maps for a recipe with {frags.mask.shape[1]} views")
    maps = _resample(maps, coarse.mask[0].cpu(), size)
    n = scan.num_vertices
    total = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.float64)
    for v in range(maps.shape[0]):
        covered = frags.mask[0, v].cpu().reshape(-1)
        face = frags.face[0, v].cpu().reshape(-1)[covered]
        relevance = maps[v].reshape(-1)[covered].double()
        if scan.is_point_cloud:
            ids, weights = face[:, None], torch.ones(len(face), 1, dtype=torch.float64)
        else:
            ids = torch.as_tensor(scan.faces)[face]  # (P, 3)
            weights = frags.bary[0, v].cpu().reshape(-1, 3)[covered].double()
        num = torch.zeros(n, dtype=torch.float64).index_add_(
            0, ids.reshape(-1), (weights * relevance[:, None]).reshape(-1)
        )
        den = torch.zeros(n, dtype=torch.float64).index_add_(0, ids.reshape(-1), weights.reshape(-1))
        visible = den > 1e-9
        total[visible] += num[visible] / den[visible]
        seen += visible
    return (total / seen.clamp_min(1)).float().numpy()


# A diverging map (blue: hiding it raises the label; white: no effect; red: hiding it lowers the label), after
# Moreland's "cool to warm".
_ANCHORS = np.array(
    [[59, 76, 192], [124, 159, 249], [221, 221, 221], [245, 156, 125], [180, 4, 38]], dtype=np.float64
)


def colormap(values, vmax: float | None = None) -> np.ndarray:
    """Values -> (..., 3) uint8 colours on a blue-white-red scale symmetric about 0, saturating at +-`vmax`
    (default the largest magnitude)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    vmax = float(np.abs(values).max(initial=0.0)) if vmax is None else float(vmax)
    t = (np.clip(values / vmax, -1.0, 1.0) + 1.0) / 2.0 if vmax > 0 else np.full(values.shape, 0.5)
    position = t * (len(_ANCHORS) - 1)
    low = np.minimum(position.astype(int), len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    colours = _ANCHORS[low] * (1.0 - frac) + _ANCHORS[low + 1] * frac
    return np.clip(np.round(colours), 0, 255).astype(np.uint8)


def paint(scan: Scan, vertex_relevance, vmax: float | None = None) -> Scan:
    """A copy of the scan whose vertex colours show `vertex_relevance` (N,) (`colormap`)."""
    relevance = np.asarray(vertex_relevance, dtype=np.float32)
    if relevance.shape != (scan.num_vertices,):
        raise ValueError(f"vertex_relevance must have shape ({scan.num_vertices},); got {relevance.shape}")
    return scan.replace(colors=colormap(relevance, vmax), uv=None, texture=None)


def overlay(views, view_maps, alpha: float = 0.7, vmax: float | None = None) -> np.ndarray:
    """(V, H, W, 3) uint8 views with their relevance maps (V, H, W) laid over them: `colormap` colours, opaque
    in proportion to the magnitude (up to `alpha` at `vmax`, default the largest magnitude over all views)."""
    views = np.asarray(views, dtype=np.uint8)
    maps = np.asarray(view_maps, dtype=np.float64)
    if maps.shape != views.shape[:3]:
        raise ValueError(f"view_maps must have shape {views.shape[:3]}; got {maps.shape}")
    vmax = float(np.abs(maps).max(initial=0.0)) if vmax is None else float(vmax)
    strength = np.clip(np.abs(maps) / vmax, 0.0, 1.0) if vmax > 0 else np.zeros(maps.shape)
    a = (alpha * strength * (views.max(axis=-1) > 0))[..., None]
    out = views * (1.0 - a) + colormap(maps, vmax) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def write_glb(scan: Scan, colours, path) -> str:
    """Write the scan with (N, 3) or (N, 4) uint8 vertex `colours` (None: the scan's own) as a binary glTF;
    point clouds become a glTF point cloud. Returns the path."""
    import trimesh

    colours = scan.colors if colours is None else np.asarray(colours, dtype=np.uint8)
    if colours is not None and colours.shape[0] != scan.num_vertices:
        raise ValueError(f"{len(colours)} colours for {scan.num_vertices} vertices")
    if colours is not None and colours.shape[1] == 3:
        colours = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    if scan.is_point_cloud:
        geometry = trimesh.PointCloud(scan.vertices, colors=colours)
    else:
        geometry = trimesh.Trimesh(scan.vertices, scan.faces, vertex_colors=colours, process=False)
    geometry.export(str(path), file_type="glb")
    return str(path)


@dataclass
class Explanation:
    """Where on the face `label` came from.

    labels, probs: the labels scored and their (C,) probabilities as served (with a checkpoint's companion,
    `affectvlm.companion`, the pooled answer, which the maps then explain: each window hid the same pixels of both
    models' views; the views shown are the main model's). view_maps: (V, H, W)
    relevance per pixel of `views` (V, H, W, 3) uint8, the views the model saw; overlays: the maps laid over the
    views. scan: the normalised scan the views were rendered from, vertex_relevance: (N,) per vertex of it (both
    None when the views were not rendered from a scan). Positive relevance: hiding that region lowers the label's
    score.
    """

    label: str
    labels: list[str]
    probs: np.ndarray
    view_maps: np.ndarray
    overlays: np.ndarray
    views: np.ndarray
    view_names: list[str]
    scan: Scan | None = None
    vertex_relevance: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def painted(self, vmax: float | None = None) -> Scan:
        """The scan with vertex colours showing its relevance (`paint`)."""
        if self.scan is None or self.vertex_relevance is None:
            raise ValueError("no scan to paint: these views were not rendered from a scan")
        return paint(self.scan, self.vertex_relevance, vmax)

    def write_glb(self, path) -> str:
        """The scan painted by relevance, as a GLB file; returns the path."""
        painted = self.painted()
        return write_glb(painted, painted.colors, path)


def explain_prepared(
    predictor,
    views: torch.Tensor,
    names: list[str],
    class_embeds: torch.Tensor,
    *,
    scan: Scan | None = None,
    label: str | None = None,
    view_mask=None,
    notes=(),
    hide: str = "view",
    labels=None,
    companion_views: torch.Tensor | None = None,
    **options,
) -> Explanation:
    """Explain `label` (default the top one) among `names` with (C, D) `class_embeds` for (V, H, W, 3) uint8
    `views` the predictor has already prepared (`prepare_scan`, `prepare_sequence`, or given images with their
    (V,) `view_mask`); with the normalised `scan` they were rendered from (by `predictor.recipe`), the relevance
    is carried to its vertices too. `hide`: what an occlusion window hides of a scan (`HIDE`). With the predictor's
    companion's views of the same sample (`companion_views`, `Companion.views`) the pooled answer is explained, the
    companion scoring `labels` (the form given to the predictor) as the main model does. `options` go to
    `explain_views`."""
    model, processor = predictor.model, predictor.processor
    views = torch.as_tensor(views).cpu()
    mask = (
        torch.ones(len(views), dtype=torch.bool) if view_mask is None else torch.as_tensor(view_mask).bool()
    )
    with torch.no_grad():
        pixels = processor.normalize_views(views[None]).to(model.device)
        scores = model.score(pixels, class_embeds.to(model.device), view_mask=mask[None].to(model.device))
    companion = predictor.companion if companion_views is not None else None
    if companion is not None:
        companion_views = torch.as_tensor(companion_views).cpu()
        probs = companion.pooled(scores, names, labels, companion_views).probs
        other = companion.predictor
        options["companion"] = Reader(other.model, other.processor, companion_views,
                                      companion.class_embeddings(names, labels), companion.weight)  # fmt: skip
    else:
        probs = scores.probs[0].float().cpu().numpy()
    if label is None:
        label = names[int(np.argmax(probs))]
    elif label not in names:
        raise InputError(f"{label!r} is not among the labels scored ({', '.join(names)})")
    if hide not in HIDE:
        raise InputError(f"hide must be one of {', '.join(HIDE)}, got {hide!r}")
    if hide == "surface" and scan is not None:  # each part of the face hidden in every view that shows it
        options["surface"] = surface_ids(scan, predictor.recipe)
    maps = explain_views(model, processor, views, class_embeds, names.index(label), view_mask=mask, **options)
    vertex = None if scan is None else relevance_to_vertices(scan, predictor.recipe, maps)
    return Explanation(
        label=label,
        labels=list(names),
        probs=probs,
        view_maps=maps.numpy(),
        overlays=overlay(views.numpy(), maps.numpy()),
        views=views.numpy(),
        view_names=list(processor.view_names),
        scan=scan,
        vertex_relevance=vertex,
        notes=list(notes),
    )


def explain(predictor, scan, label: str | None = None, labels=None, **options) -> Explanation:
    """Explain the predictor's score of `label` (default its top label) among `labels` (default the model's;
    any form `predictor(labels=...)` takes) for a scan (a path or a Scan): which regions of the views it saw,
    and which vertices of the normalised scan, the score depends on. `options`: `hide` (`HIDE`) and those of
    `explain_views`. With a companion (`affectvlm.companion`) the pooled answer is explained, as it is served."""
    normalized, views, notes = predictor.prepare_scan(scan)
    names, embeds = predictor.class_embeddings(labels)
    other = None if predictor.companion is None else predictor.companion.views(normalized, sequence=False)
    return explain_prepared(
        predictor, views, names, embeds, scan=normalized, label=label, notes=notes, labels=labels,
        companion_views=other, **options,
    )  # fmt: skip
