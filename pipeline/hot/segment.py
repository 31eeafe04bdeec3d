"""Deprecated import path, kept for one release: segment names, listing, reading and the
segment manifest live in ``pipeline.format.segment`` (names in ``pipeline.format.layout``,
the manifest in ``pipeline.format.manifest``); this module only re-exports their names.
"""

from pipeline.format.layout import SEGMENT_RE, parse_segment_name, segment_name  # noqa: F401
from pipeline.format.manifest import SegmentManifest  # noqa: F401
from pipeline.format.segment import *  # noqa: F403
