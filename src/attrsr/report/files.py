"""Kept for the attribution report until it imports :mod:`attrsr.fileio` directly."""

from attrsr.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: F401
