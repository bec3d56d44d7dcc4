"""The model zoo: ``attrsr.models.load(weights=...)`` (architecture detected) or ``load(name, weights=..., scale=...)``, ``names()``, ``create()``.

Each architecture lives in its own module and registers itself when this package is imported
(explicit imports below, no import-time scanning).
"""

from attrsr.models.registry import (
    ContractWrapper,
    ModelSpec,
    all_specs,
    body_and_tail,
    builder_options,
    create,
    load,
    load_weights,
    names,
    read_checkpoint,
    register,
    spec,
    unwrap_state_dict,
)

# Architecture modules (each calls ``register``). Keep this list explicit.
from attrsr.models import _zoo  # noqa: F401,E402

__all__ = [
    "ContractWrapper",
    "ModelSpec",
    "all_specs",
    "body_and_tail",
    "builder_options",
    "create",
    "load",
    "load_weights",
    "names",
    "read_checkpoint",
    "register",
    "spec",
    "unwrap_state_dict",
]
