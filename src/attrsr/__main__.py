"""``python -m attrsr`` (used by torchrun: ``torchrun --nproc_per_node 2 -m attrsr train …``)."""

from attrsr.cli import main

main()
