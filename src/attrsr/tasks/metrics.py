"""Task metrics: top-1 accuracy and mIoU from a confusion matrix (ignore index, mean over the classes
present). COCO mAP goes through pycocotools (not hand-written) where detection is used."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attrsr.errors import AttrsrError


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


class ConfusionMatrix:
    """Accumulates (true, predicted) pixel counts over images; ``ignore_index`` pixels are skipped."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.k = num_classes
        self.ignore = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        p = np.asarray(pred.detach().cpu()).astype(np.int64).ravel()
        t = np.asarray(target.detach().cpu()).astype(np.int64).ravel()
        keep = t != self.ignore if self.ignore is not None else np.ones_like(t, dtype=bool)
        p, t = p[keep], t[keep]
        if t.size and (t.min() < 0 or t.max() >= self.k):
            raise AttrsrError(f"label id {int(t.max() if t.max() >= self.k else t.min())} is outside 0..{self.k - 1} (ignore id {self.ignore})")
        self.matrix += np.bincount(t * self.k + p, minlength=self.k**2).reshape(self.k, self.k)

    def iou(self) -> np.ndarray:
        """Per-class IoU (NaN for classes that occur neither in the labels nor in the predictions)."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in the labels."""
        present = self.matrix.sum(1) > 0
        return float(np.nanmean(self.iou()[present])) if present.any() else float("nan")


def coco_map(annotations: Any, detections: list[dict[str, Any]]) -> dict[str, float]:
    """COCO box mAP through pycocotools (the official evaluator; not re-implemented here).

    ``annotations``: a COCO instances json (path or loaded dict); ``detections``: COCO result rows
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. Returns ``map`` (AP@[.5:.95], all
    areas, 100 detections), ``map50``, ``map75`` and the small/medium/large APs (−1 where the
    ground truth has no such object, as pycocotools reports)."""
    import contextlib
    import copy
    import io
    import json
    from pathlib import Path

    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise AttrsrError("COCO mAP needs pycocotools: pip install 'attrsr[detection]' (or pip install pycocotools)") from None
    data = json.loads(Path(annotations).read_text()) if not isinstance(annotations, dict) else copy.deepcopy(annotations)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        if not detections:
            return {k: 0.0 for k in ("map", "map50", "map75", "map_small", "map_medium", "map_large")}
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
    return {n: float(v) for n, v in zip(names, ev.stats[:6])}
