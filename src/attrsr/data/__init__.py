"""Data: evaluation datasets in standard layouts, and the bundled sample photos."""

from attrsr.data.datasets import Pair, SRDataset, open_dataset
from attrsr.data.samples import load_sample, sample_names

__all__ = ["Pair", "SRDataset", "open_dataset", "load_sample", "sample_names"]
