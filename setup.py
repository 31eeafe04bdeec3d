"""Build hook for the optional C accelerator (all other metadata is in pyproject.toml).

``pipeline/_native.c`` links OpenSSL's libcrypto (the library hashlib already uses).  The
extension is optional: where no compiler or OpenSSL headers are present the build goes on
without it and the package uses its pure-Python paths (slower, same bytes, same verdicts).
Set ``PIPELINE_NO_NATIVE=1`` to skip it on purpose.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("PIPELINE_NO_NATIVE") != "1":
    ext_modules.append(
        Extension(
            "pipeline._native",
            sources=["pipeline/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
