"""worm-pipeline: tamper-evident audit logs."""
