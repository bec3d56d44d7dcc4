"""The papers' attribution-driven training methods, one module each, behind the engine's hook protocol
(:mod:`attrsr.engine.hooks`): ADD/ADD+ and the CutBlur family (``augment``), BSPA (``bspa``), the non-local
attribution prior (``prior``), SR4IR (``sr4ir``). Importing this package registers the built-in methods
(``attrsr/__init__`` does, so they are known wherever attrsr is used; the engine never imports them);
built so far: the augmentation family and ADD/ADD+ (:mod:`attrsr.methods.augment`), the attribution prior (:mod:`attrsr.methods.prior`). Recipes can also name a method outside attrsr as
``package.module:Class``.
"""

from attrsr.methods import augment  # noqa: E402,F401  -- registers blend … cutblur, moa, add, add_plus
from attrsr.methods import prior  # noqa: E402,F401  -- registers attribution_prior
from attrsr.methods import bspa  # noqa: E402,F401  -- registers bspa
from attrsr.methods import sr4ir  # noqa: E402,F401  -- registers sr4ir (segmentation)
