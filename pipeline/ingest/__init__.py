"""Ingest for applications: NDJSON over a Unix socket or HTTP (``server``), and a
``logging.Handler`` for Python applications (``handler``)."""

from pipeline.ingest.handler import AuditLogError, AuditLogHandler, record_to_event
from pipeline.ingest.server import IngestServer

__all__ = ["AuditLogError", "AuditLogHandler", "IngestServer", "record_to_event"]
