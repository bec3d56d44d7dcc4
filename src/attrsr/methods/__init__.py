"""The papers' attribution-driven training methods, one module each, behind the engine's hook protocol
(:mod:`attrsr.engine.hooks`): ADD/ADD+ and the CutBlur family (``augment``), BSPA (``bspa``), the non-local
attribution prior (``prior``), SR4IR (``sr4ir``). Importing this package registers the built-in methods
(``attrsr/__init__`` does, so they are known wherever attrsr is used; the engine never imports them);
none is built yet (see the open issues). Recipes can also name a method outside attrsr as
``package.module:Class``.
"""
