"""CenterNet's targets, loss and decoding for :class:`attrsr.tasks.networks.CenterNetDetector`, vectorised
over the batch and the boxes (no Python loop over objects).

Boxes travel as padded tensors: ``boxes`` (B,N,4) x0, y0, x1, y1 in input pixels, ``labels`` (B,N) class
indices 0..K−1 with −1 for padding (and for boxes dropped by a crop), ``crowd`` (B,N) bool.

* :func:`centernet_targets` — per object its centre cell on the stride-s grid, the sub-cell offset and
  the log size in stride units; the class heatmap is the maximum of per-object Gaussians (CenterNet's
  radius for 0.7 IoU at the box size, σ = (2r+1)/6, truncated at r) equal to 1 exactly at each centre
  cell. Crowd boxes are no objects: their area in their class's channel is ignored by the loss
  (neither positive nor negative), as COCO's evaluation ignores detections there.
* :func:`centernet_loss` — CenterNet's penalty-reduced focal loss (α = 2, β = 4) over the heatmap,
  normalised by the number of objects, plus L1 on the log size and on the offset at the centre cells.
  Log size instead of CenterNet's raw size (its weight 0.1) keeps the two regressions on one scale
  whatever the crop size, so both have weight 1.
* :func:`centernet_decode` — peaks of the sigmoid heatmap (a cell equal to its 3×3 max-pool), top-K
  over classes and cells, box = ((cell + offset)·s ± exp(size)·s/2), clipped to the image: boxes in
  input pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_radius(w: torch.Tensor, h: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius (in grid cells) within which a shifted box of size w×h keeps ``min_overlap``
    IoU (its three cases, as in its code), floored and at least 0."""
    m = min_overlap
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + (b1**2 - 4 * c1).clamp_min(0).sqrt()) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + (b2**2 - 16 * c2).clamp_min(0).sqrt()) / 2
    b3, c3 = -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + (b3**2 - 16 * m * c3).clamp_min(0).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).floor().clamp_min(0)


def centernet_targets(boxes: torch.Tensor, labels: torch.Tensor, num_classes: int, grid: tuple[int, int], stride: int,
                      crowd: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Dense and per-object targets on a ``grid`` (h, w) of cells ``stride`` pixels wide.

    Returns ``heat`` (B,K,h,w), ``ignore`` (B,K,h,w) bool, and per object ``index`` (B,N) flat centre
    cell, ``size`` (B,N,2) log(w/s), log(h/s), ``offset`` (B,N,2) centre − cell (in cells), ``mask``
    (B,N) bool (a real, non-crowd object)."""
    b, n = labels.shape
    gh, gw = grid
    device = boxes.device
    crowd = torch.zeros_like(labels, dtype=torch.bool) if crowd is None else crowd
    valid = labels >= 0
    mask = valid & ~crowd
    cells = boxes.float() / stride
    wh = (cells[..., 2:] - cells[..., :2]).clamp_min(1e-6)
    centre = (cells[..., :2] + cells[..., 2:]) / 2
    cx = centre[..., 0].floor().clamp(0, gw - 1)
    cy = centre[..., 1].floor().clamp(0, gh - 1)
    index = (cy * gw + cx).long()
    offset = centre - torch.stack([cx, cy], -1)
    size = wh.log()

    radius = gaussian_radius(wh[..., 0], wh[..., 1])
    sigma = (2 * radius + 1) / 6
    xs = torch.arange(gw, device=device, dtype=torch.float32)
    ys = torch.arange(gh, device=device, dtype=torch.float32)
    dx = xs.view(1, 1, 1, gw) - cx[..., None, None]
    dy = ys.view(1, 1, gh, 1) - cy[..., None, None]
    r = radius[..., None, None]
    window = (dx.abs() <= r) & (dy.abs() <= r)
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2)) * window * mask[..., None, None]
    heat = torch.zeros(b, num_classes, gh * gw, device=device)
    cls = labels.clamp_min(0)[..., None].expand(b, n, gh * gw)
    heat.scatter_reduce_(1, cls, g.reshape(b, n, gh * gw), reduce="amax")

    # Crowd regions: every cell the crowd box overlaps, in its class's channel.
    x0, y0 = cells[..., 0].floor()[..., None, None], cells[..., 1].floor()[..., None, None]
    x1, y1 = cells[..., 2].ceil()[..., None, None], cells[..., 3].ceil()[..., None, None]
    inside = (xs.view(1, 1, 1, gw) >= x0) & (xs.view(1, 1, 1, gw) < x1) & (ys.view(1, 1, gh, 1) >= y0) & (ys.view(1, 1, gh, 1) < y1)
    region = (inside & (valid & crowd)[..., None, None]).float().reshape(b, n, gh * gw)
    ignore = torch.zeros(b, num_classes, gh * gw, device=device).scatter_reduce_(1, cls, region, reduce="amax")
    ignore = (ignore > 0) & (heat < 1)  # a real object's centre stays a positive
    return {"heat": heat.view(b, num_classes, gh, gw), "ignore": ignore.view(b, num_classes, gh, gw),
            "index": index, "size": size, "offset": offset, "mask": mask}


def _at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B,C,h,w) maps read at flat cells ``index`` (B,N) → (B,N,C)."""
    b, c = maps.shape[:2]
    return maps.reshape(b, c, -1).gather(2, index[:, None].expand(b, c, index.shape[1])).transpose(1, 2)


def centernet_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Focal loss on the heatmap + L1 on log size and offset at the object centres (one scalar)."""
    logits, gt = out["heatmap"], targets["heat"]
    pos = gt == 1
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logits.sigmoid()
    pos_loss = ((1 - p) ** 2 * log_p)[pos].sum()
    neg = ~pos & ~targets["ignore"]
    neg_loss = ((1 - gt) ** 4 * p**2 * log_not_p)[neg].sum()
    num = pos.sum().clamp_min(1)
    focal = -(pos_loss + neg_loss) / num
    mask = targets["mask"]
    if not bool(mask.any()):
        return focal + 0 * (out["size"].sum() + out["offset"].sum())  # keeps every head in the graph (DDP)
    k = mask.sum()
    size = (_at(out["size"], targets["index"]) - targets["size"]).abs()[mask].sum() / (2 * k)
    offset = (_at(out["offset"], targets["index"]) - targets["offset"]).abs()[mask].sum() / (2 * k)
    return focal + size + offset


def centernet_decode(out: dict[str, torch.Tensor], stride: int, top_k: int = 100,
                     image_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes (B,k,4) x0, y0, x1, y1 in input pixels, scores (B,k), class indices (B,k)) of the
    ``top_k`` heatmap peaks; ``image_size`` (h, w) clips the boxes (the input before padding)."""
    heat = out["heatmap"].sigmoid()
    b, k_cls, gh, gw = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    scores, idx = peaks.reshape(b, -1).topk(min(top_k, k_cls * gh * gw))
    cls, cell = idx // (gh * gw), idx % (gh * gw)
    off, size = _at(out["offset"], cell), _at(out["size"], cell).exp()
    cx = ((cell % gw).float() + off[..., 0]) * stride
    cy = ((cell // gw).float() + off[..., 1]) * stride
    half_w, half_h = size[..., 0] * stride / 2, size[..., 1] * stride / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)
    if image_size is not None:
        h, w = image_size
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
    return boxes, scores, cls
