"""attrsr: attribution-driven image super-resolution.

Public entry points::

    import attrsr
    model = attrsr.models.load("pan", weights="PANx4_DF2K.pth", scale=4)
    results = attrsr.evaluate(model, ["Set5"], scale=4)
"""

from attrsr import images, metrics, resize
from attrsr.errors import AttrsrError
from attrsr.evaluation import evaluate

__version__ = "0.1.0"

__all__ = ["AttrsrError", "evaluate", "images", "metrics", "resize", "__version__"]

# The built-in training methods register with the engine here, at the package face: the engine
# itself never imports them (attrsr.engine.hooks).
from attrsr import methods as _methods  # noqa: E402,F401
