"""Task networks in plain torch: a ResNet-18 classifier and a DeepLabV3-style segmenter on the same
backbone. Parameter names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1`` …,
``fc``), so its published weights load unchanged where a user has them as a file; nothing is
downloaded. Inputs: RGB in [0,1], normalised inside with the ImageNet mean/std (as torchvision's
weights expect), so SR outputs feed them directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.errors import AttrsrError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18Backbone(nn.Module):
    """torchvision's ResNet-18 trunk; ``dilate_last`` replaces layer4's stride by dilation 2
    (output stride 16, as DeepLabV3 does). ``width`` is the stem's channel count (64 = ResNet-18;
    the stages have 1, 2, 4, 8 times it): narrower trunks make CPU-scale experiments affordable."""

    LEVELS = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, dilate_last: bool = False, width: int = 64) -> None:
        super().__init__()
        w = width
        self.out_channels = 8 * w
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        if dilate_last:  # stride 1, then dilation 2 (torchvision's replace_stride_with_dilation)
            self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 1, 1), BasicBlock(8 * w, 8 * w, 1, 2))
        else:
            self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {"stem": self.maxpool(self.relu(self.bn1(self.conv1(x))))}
        for name in self.LEVELS[1:]:
            out[name] = getattr(self, name)(out[list(out)[-1]])
        return out


def resnet18_backbone(dilate_last: bool = False, width: int = 64) -> ResNet18Backbone:
    return ResNet18Backbone(dilate_last, width)


class TaskNetwork(nn.Module):
    """``features(x)`` → {level: map}; ``head(features)`` → output; ``forward = head ∘ features``."""

    feature_levels: tuple[str, ...] = ()

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def head(self, feats: dict[str, torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), tuple(x.shape[-2:]))

    def check_levels(self, names) -> None:
        bad = [n for n in names if n not in self.feature_levels]
        if bad:
            raise AttrsrError(f"{type(self).__name__} has no feature level(s) {', '.join(bad)}; it has: {', '.join(self.feature_levels)}")


class ResNet18Classifier(TaskNetwork):
    """ResNet-18 (11,689,512 parameters at 1000 classes, as torchvision's) with its own class count."""

    feature_levels = ResNet18Backbone.LEVELS

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet18Backbone(width=width)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def features(self, x):
        return self.backbone(x)

    def head(self, feats, size=None):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feats["layer4"], 1), 1))


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling: 1×1, three dilated 3×3 and image pooling."""

    def __init__(self, cin: int, cout: int = 128, rates=(6, 12, 18)) -> None:
        super().__init__()

        def branch(k, d):
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=0 if k == 1 else d, dilation=d, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.convs = nn.ModuleList([branch(1, 1)] + [branch(3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        outs = [c(x) for c in self.convs]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabV3Segmenter(TaskNetwork):
    """DeepLabV3-style segmenter: dilated ResNet-18 (output stride 16) + ASPP + 1×1 classifier,
    logits upsampled bilinearly to the input size. The TDP level is ``backbone`` (layer4's output,
    what feeds the head)."""

    feature_levels = (*ResNet18Backbone.LEVELS, "backbone")

    def __init__(self, num_classes: int = 11, aspp_channels: int = 128, width: int = 64) -> None:
        super().__init__()
        self.backbone = ResNet18Backbone(dilate_last=True, width=width)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def features(self, x):
        feats = self.backbone(x)
        feats["backbone"] = feats["layer4"]
        return feats

    def head(self, feats, size=None):
        logits = self.classifier(self.aspp(feats["backbone"]))
        return logits if size is None else F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class CenterNetDetector(TaskNetwork):
    """A small anchor-free detector: CenterNet's head (Zhou et al. 2019, "Objects as Points") on one
    level of an FPN (Lin et al. 2017) over the ResNet-18 trunk.

    The FPN's top-down path gives ``p2``…``p5`` (strides 4, 8, 16, 32; ``fpn_channels`` each: 1×1
    laterals from layer1…layer4, nearest upsampling, a 3×3 smoothing conv). The head reads ``p2``
    (stride 4, CenterNet's output stride) and returns ``{"heatmap": (B,K,H/4,W/4) logits, "size":
    (B,2,…) log box width/height in stride units, "offset": (B,2,…) sub-cell centre offset}``;
    :mod:`attrsr.tasks.detection` encodes targets, gives the loss and decodes boxes. Inputs of any size
    are zero-padded at the right and bottom to a multiple of 32 (decoding clips boxes to the image).
    TDP levels: any backbone stage or FPN level; SR4IR's default is ``p2`` and ``p3`` (two FPN levels,
    0.5 each)."""

    STRIDE = 4
    feature_levels = (*ResNet18Backbone.LEVELS, "p2", "p3", "p4", "p5")

    def __init__(self, num_classes: int = 80, fpn_channels: int = 64, width: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = ResNet18Backbone(width=width)
        c = fpn_channels
        self.lateral = nn.ModuleList([nn.Conv2d(m * width, c, 1) for m in (1, 2, 4, 8)])
        self.smooth = nn.ModuleList([nn.Conv2d(c, c, 3, padding=1) for _ in range(4)])

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, out, 1))

        self.heatmap = branch(num_classes)
        self.size = branch(2)
        self.offset = branch(2)
        # RetinaNet's prior (sigmoid(-4.6) ≈ 0.01) rather than CenterNet's 0.1: with SGD at the paper's
        # 2e-2 and small crops holding few objects, the 0.1 prior's negatives (K·h·w cells over a handful
        # of positives) start the loss near 50 and the task network diverges in a few steps.
        nn.init.constant_(self.heatmap[-1].bias, -4.6)

    def features(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
        feats = self.backbone(x)
        top = None
        for i in (3, 2, 1, 0):
            lat = self.lateral[i](feats[f"layer{i + 1}"])
            top = lat if top is None else lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            feats[f"p{i + 2}"] = self.smooth[i](top)
        return feats

    def head(self, feats, size=None):
        p2 = feats["p2"]
        return {"heatmap": self.heatmap(p2), "size": self.size(p2), "offset": self.offset(p2)}
