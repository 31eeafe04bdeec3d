"""Deprecated import path, kept for one release: the append-only and immutable file
attributes live in ``pipeline.format.attr``; this module only re-exports its names.
"""

from pipeline.format.attr import *  # noqa: F403
