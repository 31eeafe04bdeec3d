"""Deprecated import path, kept for one release: RFC 6962 Merkle hashing and proofs
lives in ``pipeline.format.merkle``; this module only re-exports its names.
"""

from pipeline.format.merkle import *  # noqa: F403
