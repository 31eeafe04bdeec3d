"""Deprecated import path, kept for one release: the record line (encoding, parsing, timestamps)
lives in ``pipeline.format.record``; this module only re-exports its names.
"""

from pipeline.format.record import *  # noqa: F403
