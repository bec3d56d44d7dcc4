"""Attribution for SR networks: LAM, the gradient family, the Diffusion Index, pictures, reports.

    from attrsr.attribution import lam, attribute
    res = lam(model, lr, (x, y, 16))          # x = column, y = row of the window's top-left, SR pixels
    res.saliency, res.di, res.completeness_error
    res = attribute(model, lr, (x, y), method="ig")

Pictures live in :mod:`attrsr.attribution.viz`, multi-model analyses in
:mod:`attrsr.attribution.analysis`, HTML/PNG/JSON reports in :mod:`attrsr.report.attribution`
(imported lazily: they pull in matplotlib/scipy).
"""

from attrsr.attribution._common import AttributionResult, saliency_map
from attrsr.attribution.di import diffusion_index, gini
from attrsr.attribution.gradients import METHODS, activation_summary, attribute
from attrsr.attribution.integrate import integrated_gradients, lam, lam_windows, path_attribution
from attrsr.attribution.objectives import Window, gradient_detector, window_sum
from attrsr.attribution.paths import BlurPath, LinearPath, blur_path, gaussian_kernel, linear_path

__all__ = [
    "METHODS",
    "AttributionResult",
    "BlurPath",
    "LinearPath",
    "Window",
    "activation_summary",
    "attribute",
    "blur_path",
    "diffusion_index",
    "gaussian_kernel",
    "gini",
    "gradient_detector",
    "integrated_gradients",
    "lam",
    "lam_windows",
    "linear_path",
    "path_attribution",
    "saliency_map",
    "window_sum",
]
