"""Deprecated import path, kept for one release: what a hot tier and a stream directory look
like is decided in ``pipeline.format.layout``; this module only re-exports its names.
"""

from pipeline.format.layout import *  # noqa: F403
