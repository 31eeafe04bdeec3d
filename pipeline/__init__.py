"""worm-pipeline: tamper-evident audit logs."""

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]),
# `pipeline --version` prints it, CHANGELOG.md names it.
__version__ = "0.1.0"
