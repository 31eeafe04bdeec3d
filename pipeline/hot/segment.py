"""Deprecated import path, kept for one release: segment names, listing, reading and the
segment manifest live in ``pipeline.format.segment`` (names in ``pipeline.format.layout``,
the manifest in ``pipeline.format.manifest``); this module only re-exports their names.
"""

from pipeline.format.segment import *  # noqa: F403
