"""The PostgreSQL layer (issue 20; docs/POSTGRES.md).

- ``install.py``: the hardening SQL (``pipeline pg install``) and the report of it as it
  is (``pipeline pg check``).
- ``decode.py``: pgoutput's logical replication messages and the one rendering of a row
  as JSON, shared by the source (what goes into the chain) and the reconciliation (what
  the table holds now).
- ``source.py``: ``PostgresSource``, the sidecar's ``[source.postgres]`` input: every
  committed row into the hot chain, exactly once, in commit order, through a logical
  replication slot read with SQL.
- ``reconcile.py``: ``pipeline pg verify``: table against chain (hot and cold), primary
  against replica.

psycopg (3) is an optional dependency: ``pip install 'worm-pipeline[postgres]'``.
Nothing outside this package imports it, and the sidecar loads this package only when
``[source.postgres]`` is configured.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError

__all__ = ["PgError", "require_psycopg"]

INSTALL_HINT = "pip install 'worm-pipeline[postgres]' (psycopg 3)"


class PgError(PipelineError, RuntimeError):
    """The PostgreSQL layer could not do what it was asked (exit code 2 in the CLI)."""


def require_psycopg() -> Any:
    """The psycopg module, or PgError naming the extra to install."""
    try:
        import psycopg
    except ImportError as exc:
        raise PgError(f"the PostgreSQL layer needs psycopg 3, which is not installed: {INSTALL_HINT}") from exc
    return psycopg
