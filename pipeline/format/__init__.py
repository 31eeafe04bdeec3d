"""The formats a third party verifies and every stage reads, in one package.

- ``record``: the record line (encoding, strict parsing, the one timestamp parser);
- ``strictjson``: the JSON profile records and ingested events follow (FORMAT §1.1);
- ``merkle``: RFC 6962/9162 hashing, compact ranges, proofs;
- ``checkpoint``: signed checkpoint notes and their keys;
- ``manifest`` and ``segment``: the segment manifest, reading segment files;
- ``layout``: every path and object key of the log (segments, ``head.json`` with its one
  typed reader and writer, ``LOCK``, ``checkpoints/``, ``.ship/``, cold object keys and
  metadata, witness directories) and what a hot tier is;
- ``files``: the one ``fsync_dir`` and atomic replace;
- ``attr``: the append-only and immutable attributes that protect segments and file:// cold
  objects (protection, not evidence: FORMAT §2).

The dependency rule (docs/ARCHITECTURE.md, tests/format/test_import_graph.py): this package
imports nothing from the rest of ``pipeline`` but the optional accelerator switch
(``pipeline._accel``); ``cold``, ``ship``, ``verify``, ``witness``, ``ingest`` and ``cli``
read formats from here, never from ``pipeline.hot``.
"""
