"""Deprecated import path, kept for one release: signed checkpoints (notes, keys)
lives in ``pipeline.format.checkpoint``; this module only re-exports its names.
"""

from pipeline.format.checkpoint import *  # noqa: F403
