"""Where on the face the decision came from (`affectvlm.explain`), checked by what the relevance predicts: hiding
the region it marks lowers the label's score more than hiding a random region of the same size, on the views and
on the scan's vertices; the pixels it carries to vertices are the ones the model saw."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from affectvlm.explain import (
    HIDE,
    Explanation,
    explain,
    explain_prepared,
    explain_views,
    fused_logits,
    occlusion_grid,
    overlay,
    paint,
    relevance_to_vertices,
    surface_ids,
    write_glb,
)
from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor
from affectvlm.scan import load_scan
from affectvlm.scan.recipe import ScanRecipe
from affectvlm.scan.render import DEFAULT_EXTENT, pixel_centers, rasterize
from affectvlm.scan.types import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SCANS = sorted((ROOT / "examples").glob("scan_subject*_*.ply"))
SIZE = 96  # the views of the pixel tests: small (the processor resizes them to the model's input)
TOP = 0.1  # the share of the face hidden: the most relevant pixels (or vertices) vs random regions this size
RANDOM_REGIONS = 16
# Examples and occlusion modes whose vertex relevance the shipped default's answer does not follow, said here
# (xfail, strict): the default reads scan_subject2_anger right, but one random blob of its vertices (of 16) lowers
# the served anger logit (its companion's included) by 1.29 where the most relevant 10 % lower it by 0.29
# (hide="view") and 0.26 ("surface"), no more than the random blobs' mean (0.31; the stage-4 default passed).
# scan_subject0_happiness with hide="surface" failed while the main model's reading alone was explained (1.15
# against a mean of 0.58); explaining the pooled answer, its most relevant 10 % lower happiness by 0.95 against 0.33.
UNFAITHFUL_VERTICES = {
    ("scan_subject2_anger", "view"),
    ("scan_subject2_anger", "surface"),
}

pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a CPU shared with other jobs, two threads waiting on each other make these small
    batches several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


@pytest.fixture(scope="module")
def scans(predictor):
    """Example path -> its normalised scan."""
    return {path: predictor.recipe.normalize(load_scan(path)) for path in EXAMPLE_SCANS}


def recipe_at(predictor, size: int) -> ScanRecipe:
    return dataclasses.replace(predictor.recipe, size=size)


def logits_of(predictor, views: torch.Tensor, embeds: torch.Tensor) -> np.ndarray:
    """(B, C) fused logits of (B, V, H, W, 3) uint8 views."""
    with torch.no_grad():
        pixels = predictor.processor.normalize_views(views)
        return predictor.model.score(pixels, embeds).logits.float().numpy()


def served_logits(predictor, scans: list, names: list[str]) -> np.ndarray:
    """(B, C) logits of the answer as served for normalised scans: with a companion, `(1 - w) main + w companion`
    (whose softmax is the pooled answer), each model reading its own views of the same scans."""
    logits = logits_of(predictor, predictor.recipe.views_of(scans), predictor.class_embeddings(names)[1])
    if predictor.companion is None:
        return logits
    other, w = predictor.companion.predictor, predictor.companion.weight
    return (1 - w) * logits + w * logits_of(other, other.recipe.views_of(scans), other.class_embeddings(names)[1])


def nearest_blob(points: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Indices of the k rows of `points` nearest row `seed`: a random region that is one piece, like a relevant
    region is."""
    return np.argsort(((points - points[seed]) ** 2).sum(axis=1), kind="stable")[:k]


def report(what: str, top: float, random: np.ndarray) -> str:
    return (
        f"{what}: hiding the {TOP:.0%} most relevant lowers the logit by {top:.3f}; random regions the same size "
        f"by {random.mean():.3f} on average (sd {random.std():.3f}, max {random.max():.3f}; {len(random)} regions)"
    )


def assert_most_relevant_matters_most(what: str, top: float, random: np.ndarray) -> None:
    message = report(what, top, random)
    print(message)
    assert top > 0.05 and top > 2.0 * max(random.mean(), 0.0), message
    assert (top > random).mean() >= 0.75, message


@pytest.mark.parametrize("path", EXAMPLE_SCANS, ids=lambda p: p.stem)
def test_hiding_the_most_relevant_pixels_lowers_the_label_most(predictor, scans, path):
    views = recipe_at(predictor, SIZE).views_of([scans[path]])[0]  # (3, 96, 96, 3)
    names, embeds = predictor.class_embeddings(None)
    label = int(logits_of(predictor, views[None], embeds)[0].argmax())  # whichever label wins
    maps = explain_views(predictor.model, predictor.processor, views, embeds, label).numpy()
    face = views[0].amax(dim=-1).numpy() > 0
    k = int(TOP * face.sum())
    rows, cols = np.nonzero(face)
    order = np.argsort(-maps[0][rows, cols], kind="stable")
    rng = np.random.default_rng(0)
    regions = [order[:k]] + [
        nearest_blob(np.stack([rows, cols], 1), rng.integers(len(rows)), k) for _ in range(RANDOM_REGIONS)
    ]
    hidden = views[None].repeat(len(regions), 1, 1, 1, 1)
    for i, region in enumerate(regions):
        hidden[i, 0, rows[region], cols[region]] = 0  # the frontal view; the others intact
    scores = logits_of(predictor, torch.cat([views[None], hidden]), embeds)[:, label]
    drops = scores[0] - scores[1:]
    assert_most_relevant_matters_most(f"{path.stem} ({names[label]}), frontal pixels", drops[0], drops[1:])


@pytest.mark.parametrize(
    ("path", "hide"),
    [
        pytest.param(p, h, marks=pytest.mark.xfail(reason="UNFAITHFUL_VERTICES", strict=True), id=f"{p.stem}-{h}")
        if (p.stem, h) in UNFAITHFUL_VERTICES
        else pytest.param(p, h, id=f"{p.stem}-{h}")
        for p in EXAMPLE_SCANS
        for h in HIDE
    ],
)
def test_removing_the_most_relevant_vertices_lowers_the_label_most(predictor, scans, path, hide):
    result = explain(predictor, scans[path], hide=hide)
    scan, relevance = result.scan, result.vertex_relevance
    names, embeds = predictor.class_embeddings(None)
    label = names.index(result.label)
    seen = np.flatnonzero(relevance != 0)
    assert len(seen) > 0.5 * scan.num_vertices
    k = int(TOP * len(seen))
    rng = np.random.default_rng(0)
    regions = [seen[np.argsort(-relevance[seen], kind="stable")[:k]]] + [
        seen[nearest_blob(scan.vertices[seen], rng.integers(len(seen)), k)] for _ in range(RANDOM_REGIONS)
    ]
    removed = []
    for region in regions:
        keep = np.ones(scan.num_vertices, bool)
        keep[region] = False
        removed.append(scan.subset(keep).replace(normalized=True))  # still in the frame it was rendered in
    scores = served_logits(predictor, [scan, *removed], names)[:, label]
    drops = scores[0] - scores[1:]
    assert_most_relevant_matters_most(f"{path.stem} ({result.label}), vertices", drops[0], drops[1:])


def test_explain_defaults_to_the_top_label_and_takes_others(predictor):
    path = EXAMPLE_SCANS[0]
    top = explain(predictor, path)
    assert isinstance(top, Explanation) and top.label == predictor(scan=path).label
    np.testing.assert_allclose(top.probs, predictor(scan=path).probs, atol=1e-5)  # the answer as served
    other = next(label for label in top.labels if label != top.label)
    second = explain(predictor, path, label=other)
    assert second.label == other and not np.allclose(second.view_maps, top.view_maps)
    custom = explain(predictor, path, labels=["a smiling face", "a frowning face"])
    assert custom.labels == ["a smiling face", "a frowning face"] and custom.label in custom.labels
    with pytest.raises(InputError, match="not among the labels"):
        explain(predictor, path, label="a table")
    v, h, w = top.view_maps.shape
    assert top.views.shape == top.overlays.shape == (v, h, w, 3) and top.overlays.dtype == np.uint8
    assert top.vertex_relevance.shape == (top.scan.num_vertices,) and np.isfinite(top.vertex_relevance).all()


def test_views_without_a_scan_and_missing_views(predictor, scans):
    """Given views (no scan) with one missing: that view gets no relevance, the others do; no vertices."""
    views = predictor.recipe.views_of([scans[EXAMPLE_SCANS[1]]])[0].clone()
    views[2] = 0
    names, embeds = predictor.class_embeddings(None)
    result = explain_prepared(predictor, views, names, embeds, view_mask=[True, True, False])
    assert result.scan is None and result.vertex_relevance is None
    assert (result.view_maps[2] == 0).all() and (result.view_maps[:2] != 0).any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="no scan"):
        result.painted()


def test_rasterised_pixels_line_up_with_the_views_the_model_saw(predictor, scans):
    """The triangle ids the relevance travels through come from exactly the pixels of the recipe's views."""
    scan = scans[EXAMPLE_SCANS[0]]
    for recipe in (predictor.recipe, recipe_at(predictor, SIZE)):
        for shape in (scan, scan.replace(faces=None)):
            covered = recipe.views_of([shape])[0].amax(dim=-1) > 0
            mask = rasterize([shape], recipe._render_kwargs()["views"], recipe.size).mask[0]
            assert covered.any() and torch.equal(mask, covered), (recipe.size, shape)


@pytest.mark.parametrize("upsample", [1, None])
def test_vertices_get_the_relevance_of_the_pixels_they_fall_in(predictor, scans, upsample):
    """A frontal map whose value is each pixel's x (then y) in the scan's frame gives each vertex its own x (y),
    to within about a pixel: the maps reach the vertices they were seen at, the right way round."""
    scan = scans[EXAMPLE_SCANS[0]]
    recipe = dataclasses.replace(predictor.recipe, views=((0.0, 0.0),))
    xs, ys = pixel_centers(recipe.size)
    covered = (recipe.views_of([scan])[0, 0].amax(dim=-1) > 0).numpy()
    pixel = 2.0 * DEFAULT_EXTENT / recipe.size
    for axis, grid in (
        (0, np.broadcast_to(xs[None, :], covered.shape)),
        (1, np.broadcast_to(ys[:, None], covered.shape)),
    ):
        relevance = relevance_to_vertices(scan, recipe, (grid * covered)[None], upsample=upsample)
        seen = relevance != 0
        assert seen.mean() > 0.5
        error = np.abs(relevance[seen] - scan.vertices[seen, axis])
        # Within a pixel for nearly all; the worst 1 % sit where the lips fold over the teeth, whose pixels show
        # the front surface (at the default model's 96 px: 1.0 px at the 99th percentile, 1.8 px at the 99.9th).
        assert np.quantile(error, 0.98) < pixel and np.quantile(error, 0.99) < 1.5 * pixel, (
            axis,
            error.max(),
        )


def test_background_pixels_carry_no_relevance(predictor, scans):
    views = predictor.recipe.views_of([scans[EXAMPLE_SCANS[1]]])[0]
    names, embeds = predictor.class_embeddings(None)
    maps = explain_views(predictor.model, predictor.processor, views, embeds, 0).numpy()
    background = views.amax(dim=-1).numpy() == 0
    assert background.any() and (maps[background] == 0).all() and (maps[~background] != 0).mean() > 0.9
    shown = overlay(views.numpy(), maps)
    assert (shown[background] == 0).all() and (shown[~background] != views.numpy()[~background]).any()


def test_occluded_views_are_scored_in_one_batch_as_score_would(predictor, scans):
    """All occluded copies of the three 96 px views go through the vision tower in one call (plus one for the
    intact views), and the fused logits from cached view embeddings are `model.score`'s."""
    model, processor = predictor.model, predictor.processor
    views = recipe_at(predictor, SIZE).views_of([scans[EXAMPLE_SCANS[2]]])[0]
    _, embeds = predictor.class_embeddings(None)
    calls = []
    original = model.get_view_embeddings
    model.get_view_embeddings = lambda pixels, mask: calls.append(len(pixels)) or original(pixels, mask)
    try:
        explain_views(model, processor, views, embeds, 1)
    finally:
        del model.get_view_embeddings
    windows = len(occlusion_grid(SIZE, 16, 8)) ** 2
    assert calls[0] == 1 and len(calls) == 2 and windows < calls[1] <= 3 * windows, calls
    hidden = views[None].repeat(4, 1, 1, 1, 1)
    for i in range(4):
        hidden[i, i % 3, 20 * i : 20 * i + 30, 30:60] = 0
    pixels = processor.normalize_views(hidden)
    mask = torch.ones(4, 3, dtype=torch.bool)
    with torch.no_grad():
        expected = model.score(pixels, embeds).logits
        logits, _ = fused_logits(model, model.get_view_embeddings(pixels.to(model.dtype), mask), embeds, mask)
    torch.testing.assert_close(logits, expected)


def test_a_scan_region_is_hidden_in_every_view_that_shows_it(predictor, scans):
    """With the scan's vertex ids per pixel, a window hides its square and, in the other views, exactly the
    pixels that show a vertex under the square: hiding a region in one view but not the others would let the
    model read it there (the brows are seen in all three views)."""
    from affectvlm.explain import _OcclusionMasks

    scan = scans[EXAMPLE_SCANS[2]]
    views = predictor.recipe.views_of([scan])[0]
    ids = surface_ids(scan, predictor.recipe)
    size = predictor.recipe.size
    assert ids.shape[:3] == (3, size, size) and ids.shape[3] == 3
    np.testing.assert_array_equal(ids[..., 0] >= 0, views.amax(dim=-1).numpy() > 0)  # the face, as rendered
    y, x, patch = size // 2 - 20, size // 2 - 8, 16  # the brows of the frontal view
    hidden = _OcclusionMasks(ids.shape[:3], patch, torch.as_tensor(ids))(0, y, x).numpy()
    under = set(ids[0, y : y + patch, x : x + patch].ravel()) - {-1}
    shows = np.isin(ids, list(under)).any(axis=-1)
    square = np.zeros_like(hidden)
    square[0, y : y + patch, x : x + patch] = True
    np.testing.assert_array_equal(hidden, square | shows)
    assert hidden[1].sum() > 0.5 * patch * patch and hidden[2].sum() > 0.5 * patch * patch
    alone = _OcclusionMasks(ids.shape[:3], patch, None)(0, y, x).numpy()
    np.testing.assert_array_equal(alone, square)
    default, surface = explain(predictor, scan), explain(predictor, scan, hide="surface")
    assert default.label == surface.label and not np.allclose(default.view_maps, surface.view_maps)
    with pytest.raises(ValueError, match="hide must be one of"):
        explain(predictor, scan, hide="everything")


def test_glb_loads_back_with_one_colour_per_vertex(predictor, scans, tmp_path):
    import trimesh

    scan = scans[EXAMPLE_SCANS[0]]
    relevance = scan.vertices[:, 0] - scan.vertices[:, 0].mean()  # any signed values
    for shape in (scan, scan.replace(faces=None)):
        painted = paint(shape, relevance)
        path = write_glb(
            shape, painted.colors, tmp_path / f"{'points' if shape.is_point_cloud else 'mesh'}.glb"
        )
        loaded = trimesh.load(path, process=False)
        (geometry,) = loaded.geometry.values()
        assert len(geometry.vertices) == shape.num_vertices
        np.testing.assert_allclose(geometry.vertices, shape.vertices, atol=1e-6)
        colours = geometry.colors if shape.is_point_cloud else geometry.visual.vertex_colors
        assert colours.shape == (shape.num_vertices, 4)
        np.testing.assert_array_equal(colours[:, :3], painted.colors)
    clear = np.abs(relevance) > 0.05 * np.abs(relevance).max()
    negative, positive = painted.colors[clear & (relevance < 0)], painted.colors[clear & (relevance > 0)]
    assert (negative[:, 2] > negative[:, 0]).all() and (positive[:, 0] > positive[:, 2]).all()  # blue, red


def test_point_clouds_are_explained_on_their_points(predictor, tmp_path):
    points = load_scan(EXAMPLE_SCANS[2]).replace(faces=None)
    result = explain(predictor, points)
    assert result.scan.is_point_cloud and result.vertex_relevance.shape == (result.scan.num_vertices,)
    assert np.isfinite(result.vertex_relevance).all() and (result.vertex_relevance != 0).mean() > 0.5
    assert np.abs(result.view_maps).max() > 0
    path = result.write_glb(tmp_path / "points.glb")
    import trimesh

    (geometry,) = trimesh.load(path, process=False).geometry.values()
    assert len(geometry.vertices) == result.scan.num_vertices
