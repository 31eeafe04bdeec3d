"""Deprecated import path, kept for one release: the JSON profile (docs/FORMAT.md §1.1)
lives in ``pipeline.format.strictjson``; this module only re-exports its names.
"""

from pipeline.format.strictjson import *  # noqa: F403
