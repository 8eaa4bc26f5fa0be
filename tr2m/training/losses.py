"""TR2M training losses, after the paper (the authors have not released training code).

    total = w_silog * SILog(pred, GT)
          + w_pseudo * SILog(pred, pseudo)            (pseudo metric depth, images passing the filter)
          + w_contrast * (coarse + fine)              (scale-oriented contrast, L_soc)
          + w_smooth * (smooth(A) + smooth(B))        (edge-aware smoothness of the scale/shift maps)

Every depth term is computed at the ground-truth resolution: the predicted depth and the raw
relative disparity are resized to it (bilinear, align_corners=True, as in evaluation). All terms
honour masks through `torch.where`, so zero / invalid depth never produces NaN values or gradients.

Shapes: B batch, H x W ground-truth size, h x w the head's "mid" feature size (8x the patch grid).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tr2m.transforms import resize

_NEG = -1e9  # finite "minus infinity" for masked logits (an all-masked row stays NaN-free)


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and hyper-parameters (the paper publishes none but the weights).

    Weights: the authors' option file (w_sig=10, w_sts=2, w_scon=0.2, w_eas=0.1), the values that
    trained the released head; w_silog=10 is also BTS's x10 on SILog. The paper's text gives
    l=(1, 0.5, 0.1, 0.01): preset "paper".
    variance_focus: lambda in sqrt(mean(d^2) - lambda*mean(d)^2). 0.85 (BTS) everywhere by default:
        with lambda=1 the term is blind to a global scale, i.e. it stops supervising the metric scale
        this model exists to predict. The option file's per-dataset values (NYU/VOID 0.6,
        KITTI/C3VD 1.0) are preset "authors"; `variance_focus_by_dataset` overrides per sample
        through batch["dataset"].
    rho: a pseudo depth supervises only if its delta1 against GT >= rho. 0.9: an affine fit of a good
        relative map reaches ~0.95+ on NYU/KITTI, so 0.9 keeps typical images and drops those where
        more than one valid pixel in ten is off by over 25% (the pseudo label would teach that error).
    rank_window (t): coarse positives are pairs whose rank distance (batch sorted by alpha) is at most
        max(1, floor(t * (B - 1))): the 1 nearest neighbours on each side at B=8, 3 at B=16.
    num_categories (|C|): 10 log-uniform depth bins per image; on NYU / KITTI ranges a bin is about
        ln(1.25) wide, i.e. the delta1 tolerance.
    coarse/fine_temperature: 0.1, the SupCon / supervised pixel-contrast default.
    fine_pixels: query pixels sampled per image (memory is B * fine_pixels^2 logits per map).
    min_inverse: pseudo depth is valid where alpha*D_r + beta > min_inverse (depth < 1/min_inverse).
    """

    w_silog: float = 10.0
    w_pseudo: float = 2.0
    w_contrast: float = 0.2
    w_smooth: float = 0.1
    variance_focus: float = 0.85
    variance_focus_by_dataset: Mapping[str, float] = field(default_factory=dict)
    rho: float = 0.9
    rank_window: float = 0.25
    num_categories: int = 10
    coarse_temperature: float = 0.1
    fine_temperature: float = 0.1
    fine_pixels: int = 256
    min_inverse: float = 1e-3
    eps: float = 1e-6

    def __post_init__(self) -> None:
        lambdas = [self.variance_focus, *self.variance_focus_by_dataset.values()]
        if any(not 0.0 <= lam <= 1.0 for lam in lambdas):
            raise ValueError(f"variance_focus values must lie in [0, 1], got {lambdas}")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must lie in [0, 1], got {self.rho}")
        if self.num_categories < 2 or self.fine_pixels < 2:
            raise ValueError("num_categories and fine_pixels must be >= 2")
        if min(self.coarse_temperature, self.fine_temperature, self.eps) <= 0:
            raise ValueError("temperatures and eps must be > 0")


LOSS_PRESETS: Dict[str, LossConfig] = {
    "default": LossConfig(),
    "authors": LossConfig(variance_focus_by_dataset={"nyu": 0.6, "void": 0.6, "kitti": 1.0, "c3vd": 1.0}),
    "paper": LossConfig(w_silog=1.0, w_pseudo=0.5, w_contrast=0.1, w_smooth=0.01),
}


def get_loss_preset(name: str, **overrides: Any) -> LossConfig:
    """A LossConfig preset by name, with field overrides; unknown names list the valid ones."""
    if name not in LOSS_PRESETS:
        raise KeyError(f"unknown loss preset {name!r}; valid: {sorted(LOSS_PRESETS)}")
    return replace(LOSS_PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------
# SILog and pseudo metric depth
# --------------------------------------------------------------------------------------------

def _masked_log(x: Tensor, mask: Tensor, eps: float) -> Tensor:
    """log(x) where mask, 0 elsewhere; no NaN/inf value or gradient from masked pixels."""
    return torch.log(torch.where(mask, x, torch.ones_like(x)).clamp_min(eps))


def silog_loss(pred: Tensor, gt: Tensor, mask: Tensor, variance_focus: float | Tensor = 0.85,
               eps: float = 1e-6) -> Tensor:
    """Scale-invariant log loss, per image, averaged over images with a valid pixel.

    pred, gt: [B,1,H,W] depth; mask: bool [B,1,H,W]; variance_focus: float or [B].
    Per image: sqrt(mean(d^2) - lambda*mean(d)^2 + eps^2) with d = ln pred - ln gt, computed as
    Var(d) + (1 - lambda)*mean(d)^2 (no x10: that is in the weight). Returns a scalar; 0 (with a
    graph) when no pixel is valid.
    """
    mask = mask & (gt > eps)
    d = torch.where(mask, _masked_log(pred, mask, eps) - _masked_log(gt, mask, eps), torch.zeros_like(pred))
    count = mask.flatten(1).sum(1)
    n = count.clamp_min(1).to(d.dtype)
    mean_d = d.flatten(1).sum(1) / n
    centred = torch.where(mask, d - mean_d.view(-1, 1, 1, 1), torch.zeros_like(d))
    var = centred.pow(2).flatten(1).sum(1) / n  # two-pass: no cancellation when pred = k * gt
    lam = torch.as_tensor(variance_focus, dtype=d.dtype, device=d.device)
    per_image = torch.sqrt(var + (1 - lam) * mean_d.pow(2) + eps ** 2)
    has = count > 0
    return torch.where(has, per_image, torch.zeros_like(per_image)).sum() / has.sum().clamp_min(1)


@torch.no_grad()
def fit_inverse_affine(rel: Tensor, gt: Tensor, mask: Tensor, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Least squares 1/gt ~ alpha * rel + beta on the valid pixels of each image (no gradient).

    rel, gt: [B,1,H,W]; mask: bool [B,1,H,W]. Returns alpha, beta: [B], in rel's dtype. Solved in
    float64 on centred data. Images with < 2 valid pixels or a constant rel get alpha = 0 and
    beta = mean(1/gt) (0 with no pixel).
    """
    m = (mask & (gt > eps)).flatten(1).double()
    r = rel.flatten(1).double()
    y = torch.where(m > 0, 1.0 / gt.flatten(1).double().clamp_min(eps), torch.zeros_like(r))
    n = m.sum(1).clamp_min(1)
    r_mean = (m * r).sum(1) / n
    y_mean = (m * y).sum(1) / n
    rc, yc = (r - r_mean[:, None]) * m, (y - y_mean[:, None]) * m
    var, cov = rc.pow(2).sum(1), (rc * yc).sum(1)
    ok = (m.sum(1) >= 2) & (var > 1e-12 * n * r_mean.abs().clamp_min(1).pow(2))
    alpha = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    beta = y_mean - alpha * r_mean
    return alpha.to(rel.dtype), beta.to(rel.dtype)


def pseudo_depth(rel: Tensor, alpha: Tensor, beta: Tensor, min_inverse: float = 1e-3) -> Tuple[Tensor, Tensor]:
    """Pseudo metric depth 1 / (alpha * rel + beta).

    rel: [B,1,H,W]; alpha, beta: [B]. Returns depth [B,1,H,W] (0 where invalid) and
    valid bool [B,1,H,W] (inverse depth > min_inverse and finite).
    """
    inv = alpha.view(-1, 1, 1, 1) * rel + beta.view(-1, 1, 1, 1)
    valid = torch.isfinite(inv) & (inv > min_inverse)
    depth = torch.where(valid, 1.0 / torch.where(valid, inv, torch.ones_like(inv)), torch.zeros_like(inv))
    return depth, valid


def pseudo_delta1(pseudo: Tensor, pseudo_valid: Tensor, gt: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """delta1 of the pseudo depth against GT over the GT-valid pixels of each image: [B].

    A GT-valid pixel where the pseudo depth is invalid counts as a miss; no valid pixel -> 0.
    """
    mask = mask & (gt > eps)
    both = mask & pseudo_valid
    p = torch.where(both, pseudo, torch.ones_like(pseudo))
    g = torch.where(both, gt, torch.ones_like(gt))
    hit = both & (torch.maximum(p / g, g / p) < 1.25)
    return hit.flatten(1).sum(1).float() / mask.flatten(1).sum(1).clamp_min(1).float()


def pseudo_filter(pseudo: Tensor, pseudo_valid: Tensor, gt: Tensor, mask: Tensor, rho: float) -> Tuple[Tensor, Tensor]:
    """keep bool [B] (delta1 >= rho) and delta1 [B] of each image's pseudo depth."""
    delta1 = pseudo_delta1(pseudo, pseudo_valid, gt, mask)
    return delta1 >= rho, delta1


# --------------------------------------------------------------------------------------------
# Scale-oriented contrast
# --------------------------------------------------------------------------------------------

def multi_positive_info_nce(logits: Tensor, positives: Tensor, candidates: Tensor) -> Tensor:
    """InfoNCE with several positives per anchor (SupCon form: mean of log-probabilities).

    logits: [N,M] similarities / temperature; positives, candidates: bool [N,M], the softmax runs
    over candidates. Anchors without a positive are skipped; returns 0 (with a graph) if none has.
    """
    positives = positives & candidates
    log_prob = logits.masked_fill(~candidates, _NEG)
    log_prob = log_prob - torch.logsumexp(log_prob, dim=1, keepdim=True)
    n_pos = positives.sum(1)
    per_anchor = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp_min(1)
    has = n_pos > 0
    return torch.where(has, per_anchor, torch.zeros_like(per_anchor)).sum() / has.sum().clamp_min(1)


def rank_positives(alpha: Tensor, window: float) -> Tensor:
    """bool [B,B]: pairs whose rank distance in alpha order is in 1..max(1, floor(window*(B-1)))."""
    b = alpha.shape[0]
    order = torch.argsort(alpha)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(b, device=alpha.device)
    dist = (ranks[:, None] - ranks[None, :]).abs()
    reach = max(1, int(window * (b - 1)))
    return (dist > 0) & (dist <= reach)


def coarse_contrast(embedding: Tensor, alpha: Tensor, window: float = 0.25, temperature: float = 0.1,
                    valid: Optional[Tensor] = None) -> Tensor:
    """Image-level scale contrast. embedding: [B,C]; alpha: [B] (scale of each image's fit);
    valid: bool [B], images to use (e.g. those with a GT fit). Returns a scalar."""
    if valid is not None:
        embedding, alpha = embedding[valid], alpha[valid]
    z = F.normalize(embedding.float(), dim=1)
    logits = z @ z.t() / temperature
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return multi_positive_info_nce(logits, rank_positives(alpha.detach(), window), ~eye)


def quantize_depth(depth: Tensor, mask: Tensor, num_categories: int, eps: float = 1e-6) -> Tensor:
    """Per-image log-uniform depth categories. depth: [B,N]; mask: bool [B,N] -> long [B,N] in
    0..num_categories-1, -1 where invalid."""
    logd = _masked_log(depth, mask, eps)
    lo = torch.where(mask, logd, torch.full_like(logd, float("inf"))).amin(1, keepdim=True)
    hi = torch.where(mask, logd, torch.full_like(logd, -float("inf"))).amax(1, keepdim=True)
    lo, hi = torch.where(torch.isfinite(lo), lo, 0), torch.where(torch.isfinite(hi), hi, 0)
    t = (logd - lo) / (hi - lo).clamp_min(eps)
    cat = (t * num_categories).long().clamp(0, num_categories - 1)
    return torch.where(mask, cat, torch.full_like(cat, -1))


def sample_pixels(valid: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    """Up to n random valid positions per row. valid: bool [B,N] -> index long [B,n'], ok bool [B,n']
    with n' = min(n, N); ok is False for padding when a row has fewer than n valid positions."""
    score = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, -1.0)
    top, index = score.topk(min(n, valid.shape[1]), dim=1)
    return index, top >= 0


def fine_contrast(query: Tensor, key: Tensor, depth: Tensor, mask: Tensor, num_categories: int = 10,
                  pixels: int = 256, temperature: float = 0.1) -> Tensor:
    """Pixel-level depth-category contrast within each image.

    query: [B,C,h,w] online pixel embeddings (e.g. the head's scale_mid); key: [B,C,h,w] the EMA
    key branch's (no gradient flows into it); depth: [B,1,H,W] GT; mask: bool [B,1,H,W].
    GT is sampled to h x w (nearest), `pixels` valid positions are drawn per image, and each query
    pixel's positives are the key pixels of the same depth category. Returns a scalar.
    """
    b, c, h, w = query.shape
    d = F.interpolate(depth.float(), size=(h, w), mode="nearest").flatten(1)
    m = (F.interpolate(mask.float(), size=(h, w), mode="nearest") > 0.5).flatten(1) & (d > 0)
    cats = quantize_depth(d, m, num_categories)
    index, ok = sample_pixels(m, pixels)
    q = F.normalize(query.float().flatten(2).gather(2, index[:, None].expand(b, c, -1)), dim=1)
    k = F.normalize(key.detach().float().flatten(2).gather(2, index[:, None].expand(b, c, -1)), dim=1)
    cat = cats.gather(1, index)
    logits = torch.einsum("bcn,bcm->bnm", q, k) / temperature
    candidates = ok[:, :, None] & ok[:, None, :]
    positives = (cat[:, :, None] == cat[:, None, :]) & candidates
    n = index.shape[1]
    return multi_positive_info_nce(logits.reshape(b * n, n), positives.reshape(b * n, n),
                                   candidates.reshape(b * n, n))


# --------------------------------------------------------------------------------------------
# Smoothness
# --------------------------------------------------------------------------------------------

def edge_aware_smoothness(maps: Tensor, image: Tensor, eps: float = 1e-6) -> Tensor:
    """Edge-aware first-order smoothness of a positive map, weighted by exp(-|grad I|).

    maps: [B,1,H,W] (A or B); image: [B,3,Hi,Wi] RGB in [0,1], resized to H x W. The map is divided
    by its per-image mean so that the term cannot be lowered by shrinking the map. Returns a scalar.
    """
    image = resize(image.float(), tuple(maps.shape[-2:]))
    x = maps.float() / (maps.float().mean(dim=(2, 3), keepdim=True).abs() + eps)
    grad_x = (x[..., :, 1:] - x[..., :, :-1]).abs()
    grad_y = (x[..., 1:, :] - x[..., :-1, :]).abs()
    edge_x = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    edge_y = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (grad_x * torch.exp(-edge_x)).mean() + (grad_y * torch.exp(-edge_y)).mean()


# --------------------------------------------------------------------------------------------
# The combined loss
# --------------------------------------------------------------------------------------------

class TR2MLoss(nn.Module):
    """All TR2M terms. Parameter-free: any projection head belongs to the model.

    forward(outputs, batch, key_outputs=None) -> (total, parts)
      outputs: depth, scale, shift, rel [B,1,h_in,w_in]; scale_mid, shift_mid [B,64,h,w];
               embedding [B,C] (pooled fused image features).
      batch:   image [B,3,H,W] RGB in [0,1]; depth [B,1,H,W] (0 = invalid); mask bool [B,1,H,W];
               optional dataset (list of names) for per-dataset variance focus.
      key_outputs: the EMA key branch's scale_mid / shift_mid; without it the online mids,
               detached, serve as keys.
      parts: detached scalars silog, pseudo, coarse, fine, smooth, pseudo_kept (fraction of images
             whose pseudo depth passed the filter) and total.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def _variance_focus(self, batch: Mapping[str, Any], b: int, device: torch.device) -> Tensor:
        names: Sequence[str] | str = batch.get("dataset") or [""] * b
        if isinstance(names, str):
            names = [names] * b
        table = self.config.variance_focus_by_dataset
        return torch.tensor([table.get(n, self.config.variance_focus) for n in names], device=device)

    def _depth_terms(self, outputs: Mapping[str, Tensor], gt: Tensor, mask: Tensor, lam: Tensor) -> Dict[str, Tensor]:
        cfg = self.config
        size = tuple(gt.shape[-2:])
        pred = resize(outputs["depth"].float(), size)
        rel = resize(outputs["rel"].float(), size)
        alpha, beta = fit_inverse_affine(rel, gt, mask, cfg.eps)
        pseudo, pseudo_ok = pseudo_depth(rel, alpha, beta, cfg.min_inverse)
        keep, _ = pseudo_filter(pseudo, pseudo_ok, gt, mask, cfg.rho)
        fitted = mask.flatten(1).sum(1) >= 2
        return {
            "silog": silog_loss(pred, gt, mask, lam, cfg.eps),
            "pseudo": silog_loss(pred, pseudo, pseudo_ok & keep.view(-1, 1, 1, 1), lam, cfg.eps),
            "pseudo_kept": keep.float().mean(),
            "coarse": coarse_contrast(outputs["embedding"], alpha, cfg.rank_window, cfg.coarse_temperature,
                                      valid=fitted),
        }

    def _fine(self, outputs: Mapping[str, Tensor], keys: Mapping[str, Tensor], gt: Tensor, mask: Tensor) -> Tensor:
        cfg = self.config
        terms = [fine_contrast(outputs[name], keys[name], gt, mask, cfg.num_categories, cfg.fine_pixels,
                               cfg.fine_temperature) for name in ("scale_mid", "shift_mid")]
        return sum(terms) / len(terms)

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any],
                key_outputs: Optional[Mapping[str, Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        cfg = self.config
        gt = batch["depth"].float()
        mask = batch["mask"].bool() & torch.isfinite(gt) & (gt > cfg.eps)
        gt = torch.where(mask, gt, torch.zeros_like(gt))
        lam = self._variance_focus(batch, gt.shape[0], gt.device)
        parts = self._depth_terms(outputs, gt, mask, lam)
        keys = key_outputs if key_outputs is not None else {n: outputs[n].detach() for n in ("scale_mid", "shift_mid")}
        parts["fine"] = self._fine(outputs, keys, gt, mask)
        parts["smooth"] = (edge_aware_smoothness(outputs["scale"], batch["image"], cfg.eps)
                           + edge_aware_smoothness(outputs["shift"], batch["image"], cfg.eps))
        total = (cfg.w_silog * parts["silog"] + cfg.w_pseudo * parts["pseudo"]
                 + cfg.w_contrast * (parts["coarse"] + parts["fine"]) + cfg.w_smooth * parts["smooth"])
        parts["total"] = total
        return total, {name: value.detach() for name, value in parts.items()}
