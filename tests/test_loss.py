"""The AffectVLM loss terms, the bounded learnable margin, and the cross-rank gather with gradient."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from affectvlm import modeling_affectvlm as M
from affectvlm.modeling_affectvlm import (
    AffectVLMModel,
    gather_with_grad,
    multiview_contrastive_loss,
    multiview_triplet_loss,
)
from affectvlm.testing import tiny_config


def orthogonal_class_views(num_classes=3, per_class=4, dim=8):
    """Every view of class k is exactly the unit vector e_k."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    embeds = torch.eye(dim)[labels]
    view_ids = torch.arange(per_class).repeat(num_classes)
    return embeds, labels, view_ids


def brute_force_triplet(embeds, labels, view_ids, margin):
    losses = []
    n = len(labels)
    for a, p, q in itertools.product(range(n), repeat=3):
        if labels[a] == labels[p] and view_ids[a] != view_ids[p] and labels[a] != labels[q]:
            d_ap = ((embeds[a] - embeds[p]) ** 2).sum()
            d_an = ((embeds[a] - embeds[q]) ** 2).sum()
            losses.append(torch.clamp(d_ap - d_an + margin, min=0))
    return torch.stack(losses).mean()


def test_contrastive_is_zero_when_views_coincide_and_classes_are_orthogonal():
    embeds, labels, _ = orthogonal_class_views()
    loss = multiview_contrastive_loss(embeds, labels, torch.tensor(0.2))
    assert float(loss) == pytest.approx(0.0, abs=1e-7)


def test_contrastive_penalises_spread_positives_and_close_negatives():
    embeds, labels, _ = orthogonal_class_views()
    spread = embeds.clone()
    spread[0] = F.normalize(torch.tensor([1.0, 1.0, 0, 0, 0, 0, 0, 0]), dim=0)  # a view leaning to class 1
    loss = multiview_contrastive_loss(spread, labels, torch.tensor(0.2))
    assert float(loss) > 0
    # The exact value, from the definition.
    cos = spread @ spread.T
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool)
    expected = (1 - cos[same & ~eye]).mean() + (cos[~same] - 0.2).clamp_min(0).mean()
    torch.testing.assert_close(loss, expected)


def test_triplet_zero_when_margin_satisfied_positive_otherwise():
    embeds, labels, view_ids = orthogonal_class_views()
    # Orthogonal classes: ||a-p||^2 = 0, ||a-n||^2 = 2, so any margin below 2 is satisfied.
    assert float(multiview_triplet_loss(embeds, labels, view_ids, torch.tensor(0.5))) == 0.0
    assert float(multiview_triplet_loss(embeds, labels, view_ids, torch.tensor(0.5), mining="hard")) == 0.0
    # A margin above the gap is violated by every triplet, by exactly margin - 2.
    loss = multiview_triplet_loss(embeds, labels, view_ids, torch.tensor(2.5))
    assert float(loss) == pytest.approx(0.5)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_triplet_all_matches_brute_force(chunk_size):
    g = torch.Generator().manual_seed(0)
    embeds = F.normalize(torch.randn(10, 6, generator=g), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    view_ids = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2, 2, 1])
    margin = torch.tensor(0.3)
    loss = multiview_triplet_loss(embeds, labels, view_ids, margin, chunk_size=chunk_size)
    torch.testing.assert_close(
        loss, brute_force_triplet(embeds, labels, view_ids, margin), rtol=1e-5, atol=1e-6
    )


def test_triplet_positive_must_come_from_another_view():
    # Two samples of one class seen only from the same view: no valid positive, no loss.
    embeds = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 0, 1])
    view_ids = torch.tensor([0, 0, 1])
    assert float(multiview_triplet_loss(embeds, labels, view_ids, torch.tensor(0.4))) == 0.0


def test_smooth_hinge_is_close_to_hard_hinge_and_never_flat():
    x = torch.linspace(-1, 1, 101, requires_grad=True)
    smooth = M.hinge(x, smooth=True, beta=50.0)
    assert (smooth - x.clamp_min(0)).abs().max() < 0.02
    smooth.sum().backward()
    assert (x.grad > 0).all()  # gradient everywhere, unlike the hard hinge


@pytest.mark.parametrize("direction", [+1.0, -1.0])
def test_margin_stays_inside_bounds_under_pressure(direction):
    model = AffectVLMModel(tiny_config(margin_min=0.05, margin_max=0.4))
    optimizer = torch.optim.SGD([model.margin_raw], lr=50.0)
    for _ in range(200):
        optimizer.zero_grad()
        (-direction * model.margin).backward()  # push alpha outwards, hard
        optimizer.step()
    value = float(model.margin.detach())
    assert 0.05 <= value <= 0.4
    assert value == pytest.approx(0.4 if direction > 0 else 0.05, abs=1e-3)


def test_every_term_finite_at_initialisation_with_smooth_hinges():
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(smooth_hinge=True, triplet_mining="hard"))
    pixels = torch.randn(6, 3, 3, 32, 32)
    class_embeds = F.normalize(torch.randn(6, 32), dim=-1)
    out = model(pixels, class_embeds=class_embeds, labels=torch.tensor([0, 1, 2, 3, 4, 5]))
    assert all(torch.isfinite(v) for v in out.loss_terms.values())


# -- cross-rank gather ---------------------------------------------------------------------------------------


class FakeTwoRanks:
    """Patched torch.distributed collectives: this process is `rank` of 2; the other rank holds `other`.

    all_gather fills in the other rank's tensor; all_reduce adds the other rank's gradient, which (every rank
    computing the same global loss) equals ours, as in a real run.
    """

    def __init__(self, monkeypatch, rank, other):
        self.rank, self.other = rank, other
        monkeypatch.setattr(M.dist, "is_available", lambda: True)
        monkeypatch.setattr(M.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(M.dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(M.dist, "get_rank", lambda: rank)
        monkeypatch.setattr(M.dist, "all_gather", self.all_gather)
        monkeypatch.setattr(M.dist, "all_reduce", self.all_reduce)

    def all_gather(self, parts, tensor):
        parts[self.rank].copy_(tensor)
        parts[1 - self.rank].copy_(self.other[: len(tensor)] if self.other.dtype == tensor.dtype else tensor)

    def all_reduce(self, tensor, op=None):
        tensor.mul_(2)


@pytest.mark.parametrize("rank", [0, 1])
def test_gather_with_grad_keeps_gradient(monkeypatch, rank):
    local = torch.randn(3, 4, requires_grad=True)
    other = torch.randn(3, 4)
    FakeTwoRanks(monkeypatch, rank, other)
    gathered = gather_with_grad(local)
    assert gathered.shape == (6, 4)
    expected = torch.cat([local, other] if rank == 0 else [other, local])
    torch.testing.assert_close(gathered, expected)
    assert gathered.requires_grad
    weights = torch.arange(24.0).reshape(6, 4)
    (gathered * weights).sum().backward()
    # Our slice's gradient, summed over the two ranks' identical losses.
    mine = slice(0, 3) if rank == 0 else slice(3, 6)
    torch.testing.assert_close(local.grad, 2 * weights[mine])


def test_loss_over_gathered_views_matches_single_process(monkeypatch):
    """Rank 0 of 2 computes the global multiview terms; its embeddings get the single-process gradient x 2
    (which DDP's averaging over 2 ranks turns back into exactly the single-process gradient)."""
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(itc_weight=0.0, view_itc_weight=0.0))
    g = torch.Generator().manual_seed(3)
    local_embeds = F.normalize(torch.randn(2, 3, 32, generator=g), dim=-1).requires_grad_()
    other_embeds = F.normalize(torch.randn(2, 3, 32, generator=g), dim=-1)
    local_labels, other_labels = torch.tensor([0, 1]), torch.tensor([1, 0])
    mask = torch.ones(2, 3, dtype=torch.bool)

    # Reference: one process holding the whole global batch.
    ref_embeds = torch.cat([local_embeds.detach(), other_embeds]).requires_grad_()
    ref_loss, _ = model.compute_loss(
        ref_embeds, torch.ones(4, 3, dtype=torch.bool), torch.cat([local_labels, other_labels]), None, None
    )
    ref_loss.backward()

    fake = FakeTwoRanks(monkeypatch, 0, other_embeds)
    original = fake.all_gather

    def all_gather(parts, tensor):  # labels and masks have their own "other rank" values
        if tensor.dtype == torch.long:
            parts[0].copy_(tensor)
            parts[1].copy_(other_labels)
        elif tensor.dtype == torch.bool:
            parts[0].copy_(tensor)
            parts[1].copy_(mask)
        else:
            original(parts, tensor)

    monkeypatch.setattr(M.dist, "all_gather", all_gather)
    loss, _ = model.compute_loss(local_embeds, mask, local_labels, None, None)
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    torch.testing.assert_close(local_embeds.grad, 2 * ref_embeds.grad[:2])
