"""Recognition tasks for SR4IR (METHODS.md §5): task networks written for attrsr (torchvision cannot be
imported on these machines), their metrics, and the pieces of the SR4IR loop (TDP loss, CQMix).

Every task network exposes ``features(x) → {level: map}`` and ``head(features) → output`` so the
task-driven perceptual loss can name its feature levels.
"""

from attrsr.tasks.metrics import ConfusionMatrix, top1
from attrsr.tasks.mixing import cqmix, tdp_loss
from attrsr.tasks.networks import CenterNetDetector, DeepLabV3Segmenter, ResNet18Classifier, resnet18_backbone

__all__ = ["CenterNetDetector", "ConfusionMatrix", "DeepLabV3Segmenter", "ResNet18Classifier", "cqmix", "resnet18_backbone", "tdp_loss", "top1"]
