"""TR2M losses on constructed cases with known answers."""
import math

import pytest
import torch

from tr2m.training.losses import (
    LOSS_PRESETS, LossConfig, TR2MLoss, coarse_contrast, edge_aware_smoothness, fine_contrast,
    fit_inverse_affine, get_loss_preset, multi_positive_info_nce, pseudo_delta1, pseudo_depth, pseudo_filter,
    quantize_depth, rank_positives, silog_loss,
)


def _scene(b=2, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    rel = torch.rand(b, 1, h, w, generator=g) * 5 + 0.1
    mask = torch.rand(b, 1, h, w, generator=g) > 0.4
    return rel, mask, g


# ---------------------------------------------------------------- SILog

def test_silog_hand_value():
    gt = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    pred = torch.tensor([2.0, 3.0]).view(1, 1, 1, 2)  # d = [ln2, 0]
    mask = torch.ones_like(gt, dtype=torch.bool)
    expected = math.log(2) * math.sqrt(0.5 - 0.5 * 0.25)  # mean d^2 - 0.5 mean(d)^2
    assert silog_loss(pred, gt, mask, 0.5).item() == pytest.approx(expected, rel=1e-5)
    assert silog_loss(pred, gt, mask, 0.0).item() == pytest.approx(math.log(2) / math.sqrt(2), rel=1e-5)


def test_silog_scale_invariance_only_at_lambda_one():
    gt = torch.rand(2, 1, 8, 8) * 9 + 0.5
    mask = torch.ones_like(gt, dtype=torch.bool)
    assert silog_loss(3.0 * gt, gt, mask, 1.0).item() < 1e-5
    assert silog_loss(3.0 * gt, gt, mask, 0.85).item() == pytest.approx(math.log(3) * math.sqrt(0.15), rel=1e-4)


def test_silog_per_image_lambda_and_empty_images():
    gt = torch.full((3, 1, 4, 4), 2.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[2] = False  # no valid pixel: excluded from the mean
    lam = torch.tensor([1.0, 0.0, 0.5])
    value = silog_loss(2.0 * gt, gt, mask, lam).item()
    assert value == pytest.approx((0.0 + math.log(2)) / 2, abs=1e-5)


def test_silog_masks_honoured_and_no_nan_from_zeros():
    rel, mask, g = _scene()
    gt = rel * 2
    pred = (rel * 2.5).requires_grad_()
    base = silog_loss(pred, gt, mask, 0.85)
    gt2, pred2 = gt.clone(), pred.detach().clone()
    gt2[~mask], pred2[~mask] = 0.0, float("nan")
    other = silog_loss(pred2, gt2, mask, 0.85)
    assert base.item() == pytest.approx(other.item(), rel=1e-6)
    base.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~mask] == 0).all()


def test_silog_all_zero_is_zero_with_finite_grad():
    pred = torch.zeros(2, 1, 4, 4, requires_grad=True)
    loss = silog_loss(pred, torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------- affine fit and pseudo depth

def test_fit_recovers_known_alpha_beta_and_ignores_masked_pixels():
    rel, mask, _ = _scene()
    alpha = torch.tensor([0.3, 2.0])
    beta = torch.tensor([0.05, 0.4])
    gt = 1.0 / (alpha.view(-1, 1, 1, 1) * rel + beta.view(-1, 1, 1, 1))
    gt[~mask] = torch.where(torch.arange(gt[~mask].numel()) % 2 == 0, 0.0, 1000.0)  # garbage outside
    a, b = fit_inverse_affine(rel, gt, mask)
    torch.testing.assert_close(a, alpha, rtol=1e-5, atol=0)
    torch.testing.assert_close(b, beta, rtol=1e-5, atol=1e-7)


def test_fit_degenerate_images_are_finite():
    rel = torch.ones(3, 1, 4, 4)
    gt = torch.full((3, 1, 4, 4), 2.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[0] = False          # no pixel
    mask[1] = False
    mask[1, 0, 0, 0] = True  # one pixel
    a, b = fit_inverse_affine(rel, gt, mask)  # image 2: constant rel
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert a.tolist() == [0.0, 0.0, 0.0]
    assert b.tolist() == pytest.approx([0.0, 0.5, 0.5])


def test_pseudo_depth_invalid_where_inverse_not_positive():
    rel = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    depth, valid = pseudo_depth(rel, torch.tensor([-1.0]), torch.tensor([2.5]))
    assert valid.view(-1).tolist() == [True, True, True, False]
    assert depth.view(-1).tolist() == pytest.approx([0.4, 1 / 1.5, 2.0, 0.0])


def test_filter_accepts_good_and_rejects_bad_pseudo_depth():
    gt = torch.rand(2, 1, 10, 10) * 5 + 1
    mask = torch.ones_like(gt, dtype=torch.bool)
    pseudo = gt.clone()
    pseudo[1, :, :2] *= 2.0  # 20 of 100 pixels off by 2x: delta1 = 0.8
    ok = torch.ones_like(gt, dtype=torch.bool)
    keep, delta1 = pseudo_filter(pseudo, ok, gt, mask, rho=0.9)
    assert delta1.tolist() == pytest.approx([1.0, 0.8])
    assert keep.tolist() == [True, False]
    ok[0, :, 0] = False  # invalid pseudo at valid GT counts as a miss
    assert pseudo_delta1(pseudo, ok, gt, mask)[0].item() == pytest.approx(0.9)


def test_filter_on_fitted_pseudo_depth():
    rel, mask, g = _scene()
    gt = 1.0 / (0.5 * rel + 0.1)
    gt[1] = torch.rand(1, 1, 24, 32, generator=g) * 50 + 0.1  # unrelated to rel: poor affine fit
    a, b = fit_inverse_affine(rel, gt, mask)
    pseudo, ok = pseudo_depth(rel, a, b)
    keep, delta1 = pseudo_filter(pseudo, ok, gt, mask, rho=0.9)
    assert keep.tolist() == [True, False] and delta1[1] < 0.9


# ---------------------------------------------------------------- contrast

def test_rank_positives_neighbours_in_alpha_order():
    alpha = torch.tensor([0.5, 0.1, 0.9, 0.3])  # ranks 2, 0, 3, 1
    pos = rank_positives(alpha, window=0.25)    # reach max(1, floor(0.75)) = 1
    expected = {(0, 2), (0, 3), (1, 3)}
    got = {(i, j) for i in range(4) for j in range(i + 1, 4) if pos[i, j]}
    assert got == expected and torch.equal(pos, pos.t()) and not pos.diagonal().any()
    assert rank_positives(torch.arange(16.0), 0.25)[0].sum() == 3  # floor(0.25 * 15)


def test_coarse_contrast_lower_for_ordered_batch():
    theta = torch.arange(8.0) * 0.35
    emb = torch.stack([theta.cos(), theta.sin()], 1)  # neighbours in alpha order are neighbours here
    alpha = torch.arange(8.0)
    ordered = coarse_contrast(emb, alpha)
    shuffled = coarse_contrast(emb, alpha[torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])])
    assert ordered < shuffled
    perm = torch.randperm(8)
    assert coarse_contrast(emb[perm], alpha[perm]).item() == pytest.approx(ordered.item(), rel=1e-5)


def test_info_nce_known_value_and_skips_anchorless_rows():
    logits = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    pos = torch.tensor([[True, False], [False, False]])
    cand = torch.ones(2, 2, dtype=torch.bool)
    assert multi_positive_info_nce(logits, pos, cand).item() == pytest.approx(math.log(2))
    empty = multi_positive_info_nce(logits.requires_grad_(), torch.zeros(2, 2, dtype=torch.bool), cand)
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_coarse_contrast_batch_of_one_is_zero():
    assert coarse_contrast(torch.randn(1, 16), torch.tensor([1.0])).item() == 0.0


def test_quantize_depth_log_bins_and_invalid():
    d = torch.tensor([[1.0, 10.0, 100.0, 0.0, 9.0, 11.0]])
    cats = quantize_depth(d, d > 0, 2)
    assert cats.tolist() == [[0, 1, 1, -1, 0, 1]]  # log-uniform over [1, 100]: the split is at 10


def test_fine_contrast_lower_when_features_encode_depth_category():
    torch.manual_seed(0)
    b, h, w, cats = 2, 16, 16, 4
    depth = torch.exp(torch.linspace(0, 3, w)).expand(b, 1, h, w).contiguous()
    mask = torch.ones_like(depth, dtype=torch.bool)
    category = quantize_depth(depth.flatten(1), mask.flatten(1), cats).view(b, h, w)
    aligned = torch.nn.functional.one_hot(category, 8).permute(0, 3, 1, 2).float() + 0.05 * torch.randn(b, 8, h, w)
    noise = torch.randn(b, 8, h, w)
    good = fine_contrast(aligned, aligned, depth, mask, cats, pixels=64)
    bad = fine_contrast(noise, noise, depth, mask, cats, pixels=64)
    assert good < bad


def test_fine_contrast_ignores_masked_pixels():
    torch.manual_seed(1)
    depth = torch.rand(2, 1, 16, 16) * 5 + 1
    mask = torch.rand(2, 1, 16, 16) > 0.5
    feats = torch.randn(2, 8, 16, 16)
    torch.manual_seed(2)
    base = fine_contrast(feats, feats, depth, mask, pixels=32)
    depth2, feats2 = depth.clone(), feats.clone()
    depth2[~mask] = 0.0
    feats2[~mask.expand_as(feats)] = 1e3
    torch.manual_seed(2)
    assert fine_contrast(feats2, feats2, depth2, mask, pixels=32).item() == pytest.approx(base.item(), rel=1e-5)


# ---------------------------------------------------------------- smoothness

def test_smoothness_zero_for_constant_maps_and_edge_aware():
    image = torch.rand(2, 3, 20, 20)
    assert edge_aware_smoothness(torch.full((2, 1, 20, 20), 0.02), image).item() == 0.0
    step = torch.ones(1, 1, 20, 20)
    step[..., 10:] = 2.0
    flat = torch.zeros(1, 3, 20, 20)
    edge = flat.clone()
    edge[..., 10:] = 1.0  # an image edge where the map steps
    assert edge_aware_smoothness(step, edge) < edge_aware_smoothness(step, flat)
    assert edge_aware_smoothness(step * 7, flat).item() == pytest.approx(edge_aware_smoothness(step, flat).item())


# ---------------------------------------------------------------- combined

def _outputs(b=2, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    rel = torch.rand(b, 1, 42, 56, generator=g) * 4 + 0.5
    scale = (torch.rand(b, 1, 42, 56, generator=g) * 0.01 + 0.01).requires_grad_(requires_grad)
    shift = (torch.rand(b, 1, 42, 56, generator=g) * 0.01 + 0.01).requires_grad_(requires_grad)
    out = {
        "rel": rel, "scale": scale, "shift": shift, "depth": 1.0 / (scale * rel + shift),
        "scale_mid": torch.randn(b, 64, 24, 32, generator=g, requires_grad=requires_grad),
        "shift_mid": torch.randn(b, 64, 24, 32, generator=g, requires_grad=requires_grad),
        "embedding": torch.randn(b, 32, generator=g, requires_grad=requires_grad),
    }
    return out


def _batch(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, 1, 48, 64, generator=g) * 8 + 0.5
    mask = torch.rand(b, 1, 48, 64, generator=g) > 0.3
    depth[~mask] = 0.0
    return {"image": torch.rand(b, 3, 48, 64, generator=g), "depth": depth, "mask": mask}


def test_tr2m_loss_parts_and_finite_gradients():
    out, batch = _outputs(b=4), _batch(b=4)  # B >= 3: with two images the coarse softmax is trivial
    total, parts = TR2MLoss()(out, batch)
    assert set(parts) == {"silog", "pseudo", "pseudo_kept", "coarse", "fine", "smooth", "total"}
    cfg = LossConfig()
    recomposed = (cfg.w_silog * parts["silog"] + cfg.w_pseudo * parts["pseudo"]
                  + cfg.w_contrast * (parts["coarse"] + parts["fine"]) + cfg.w_smooth * parts["smooth"])
    assert total.item() == pytest.approx(recomposed.item(), rel=1e-6)
    total.backward()
    for name in ("scale", "shift", "scale_mid", "shift_mid", "embedding"):
        grad = out[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_tr2m_loss_masked_gt_changes_nothing():
    out = _outputs(requires_grad=False)
    batch = _batch()
    torch.manual_seed(3)
    base, _ = TR2MLoss()(out, batch)
    changed = dict(batch, depth=batch["depth"].clone())
    changed["depth"][~batch["mask"]] = 123.0
    torch.manual_seed(3)
    other, _ = TR2MLoss()(out, changed)
    assert other.item() == pytest.approx(base.item(), rel=1e-6)


def test_tr2m_loss_all_zero_inputs_no_nan():
    out = {k: torch.zeros_like(v).requires_grad_(v.requires_grad) for k, v in _outputs().items()}
    batch = {"image": torch.zeros(2, 3, 48, 64), "depth": torch.zeros(2, 1, 48, 64),
             "mask": torch.ones(2, 1, 48, 64, dtype=torch.bool)}
    total, parts = TR2MLoss()(out, batch)
    assert all(torch.isfinite(v) for v in parts.values())
    total.backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values() if v.grad is not None)


def test_tr2m_loss_key_branch_gets_no_gradient():
    out = _outputs()
    keys = {n: torch.randn_like(out[n]).requires_grad_() for n in ("scale_mid", "shift_mid")}
    total, _ = TR2MLoss()(out, _batch(), key_outputs=keys)
    total.backward()
    assert all(k.grad is None for k in keys.values())


def test_per_dataset_variance_focus_from_preset():
    gt = torch.full((2, 1, 8, 8), 2.0)
    rel = torch.ones(2, 1, 8, 8)
    out = _outputs()
    out = dict(out, depth=2.0 * gt, rel=rel)
    batch = {"image": torch.rand(2, 3, 8, 8), "depth": gt, "mask": torch.ones_like(gt, dtype=torch.bool),
             "dataset": ["kitti", "nyu"]}
    _, parts = TR2MLoss(get_loss_preset("authors"))(out, batch)
    assert parts["silog"].item() == pytest.approx((0.0 + math.sqrt(0.4) * math.log(2)) / 2, abs=1e-5)
    _, default = TR2MLoss()(out, batch)
    assert default["silog"].item() == pytest.approx(math.sqrt(0.15) * math.log(2), abs=1e-5)
    _, single = TR2MLoss(get_loss_preset("authors"))(out, dict(batch, dataset="kitti"))
    assert single["silog"].item() < 1e-5  # one name for the whole batch: lambda = 1 everywhere


def test_config_validation_and_presets():
    assert set(LOSS_PRESETS) >= {"default", "authors", "paper"}
    assert get_loss_preset("paper").w_pseudo == 0.5
    assert get_loss_preset("default", rho=0.8).rho == 0.8
    with pytest.raises(KeyError, match="authors"):
        get_loss_preset("nope")
    with pytest.raises(ValueError, match="rho"):
        LossConfig(rho=1.5)
    with pytest.raises(ValueError, match="variance_focus"):
        LossConfig(variance_focus_by_dataset={"nyu": 2.0})
