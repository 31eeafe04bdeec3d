"""The one findings model: what every verifier (chain, forward-secure seals, witnesses and
checkpoints, verify-tier) reports about the data, and the one registry of finding codes.

A ``Finding`` is a fact about the data (exit code 1), never a failure to run (that is a
``PipelineError``, exit 2).  Every code a verifier can emit is registered in ``REGISTRY``
with its severity, a one-line meaning, its check family and the verbs whose reports carry
it; the docs' tables list the same codes (docs/FORMAT.md §8 for the chain and FSS codes,
docs/PROOFS.md for witnesses and checkpoints, docs/VERIFY-TIER.md for verify-tier,
docs/POSTGRES.md for the PostgreSQL layer, docs/MONITOR.md for the monitor, docs/ENCRYPTION.md for decryption) and
tests/verify/test_findings.py checks registry and tables against each other in both
directions.  Building a ``Finding`` with an unregistered code, or with a severity other
than the registry's, raises ``ValueError`` (a programming error, not a finding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

Severity = Literal["error", "warning"]
ERROR: Final = "error"  # makes the report not ok (exit code 1)
WARNING: Final = "warning"  # listed; does not fail the run

Family = Literal["chain", "fss", "witness", "tier", "pg", "pg-check", "monitor", "crypt"]
VERIFY: Final = "verify"  # `pipeline verify` / pipeline.verify_log (the hot tier)
VERIFY_TIER: Final = "verify-tier"  # `pipeline verify-tier` / pipeline.verify_tier
PG_VERIFY: Final = "pg-verify"  # `pipeline pg verify`: an audit table against the chain and a replica
DECRYPT: Final = "decrypt"  # `pipeline decrypt` / `pipeline export --identity`: encrypted events opened
MONITOR: Final = "monitor"  # `pipeline monitor`: conditions only a running watcher sees
PG_CHECK: Final = "pg-check"  # `pipeline pg check`: the table's hardening as it is


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    severity: Severity
    family: Family  # which check makes it: chain (FORMAT §1-§8), fss (§4), witness (checkpoints), tier,
                    # pg (pg verify), pg-check (pg check)
    meaning: str  # one line, as the docs' table says it
    reports: frozenset[str]  # the verbs whose reports can carry it (VERIFY, VERIFY_TIER)


_BOTH = frozenset({VERIFY, VERIFY_TIER})
_HOT = frozenset({VERIFY})
_TIER = frozenset({VERIFY_TIER})
_PGV = frozenset({PG_VERIFY})
_PGC = frozenset({PG_CHECK})
_MON = frozenset({MONITOR})
_DEC = frozenset({DECRYPT})

_TABLE: tuple[tuple[str, Severity, Family, frozenset[str], str], ...] = (
    # --- chain: one segment's records and seal, then across segments (docs/FORMAT.md §1, §8)
    ("hash-mismatch", ERROR, "chain", _BOTH, "a record's hash does not match its bytes (the record was altered)"),
    ("bad-line", ERROR, "chain", _BOTH, "a line is not a record line"),
    ("bad-json", ERROR, "chain", _BOTH, "a record is not JSON within the format's profile (syntax, UTF-8, "
     "whitespace, duplicate keys, number range, depth)"),
    ("bad-layout", ERROR, "chain", _BOTH, "a record's keys or header bytes are not in the required layout"),
    ("bad-field", ERROR, "chain", _BOTH, "a record field has the wrong type or form"),
    ("bad-version", ERROR, "chain", _BOTH, "unsupported record format version"),
    ("wrong-stream", ERROR, "chain", _BOTH, "a record names another stream"),
    ("broken-link", ERROR, "chain", _BOTH, "a record's prev does not equal the previous record's hash"),
    ("seq-gap", ERROR, "chain", _BOTH, "records are missing (seq jumps forward)"),
    ("seq-regression", ERROR, "chain", _BOTH, "a seq repeats or goes backwards (duplicated or reordered records)"),
    ("after-seal", ERROR, "chain", _BOTH, "bytes follow the seal of a segment"),
    ("seal-mismatch", ERROR, "chain", _BOTH, "a seal's counts, hashes or Merkle roots do not match the segment"),
    ("name-mismatch", ERROR, "chain", _BOTH, "a segment's file name does not match its first seq"),
    ("truncated", ERROR, "chain", _BOTH, "a segment ends without a seal (or holds no complete record) and no "
     "recovery record explains it"),
    ("recovery-mismatch", ERROR, "chain", _BOTH, "a recovery record does not match the abandoned segment it names"),
    ("recovery-drops-records", ERROR, "chain", _BOTH, "a recovery record declares complete records that continue "
     "the chain torn: a crash cannot tear a complete record, so records were cut from the stream"),
    ("missing-segment", ERROR, "chain", _BOTH, "a whole segment is missing between two others"),
    ("missing-start", ERROR, "chain", _BOTH, "the stream does not start at seq 0 and nothing records the eviction"),
    ("missing-tail", ERROR, "chain", _BOTH, "the stream head records more than the segments hold (segments removed "
     "or truncated)"),
    # --- forward-secure seals (docs/FORMAT.md §4, docs/PROOFS.md)
    ("fss-invalid", ERROR, "fss", _HOT, "a seal's forward-secure MAC is missing or does not verify, or its (epoch, "
     "index) does not increase"),
    # --- signed checkpoints and witnesses (docs/PROOFS.md)
    ("witness-root-mismatch", ERROR, "witness", _BOTH, "a witnessed checkpoint does not match the tree recomputed "
     "from the segments: the chain was rebuilt after it was witnessed"),
    ("witness-ahead", ERROR, "witness", _BOTH, "a witness holds a checkpoint larger than the log: records were "
     "removed after they were witnessed"),
    ("witness-stale", ERROR, "witness", _TIER, "a witness's newest checkpoint lags the log by more than the "
     "allowed time"),
    ("witness-checkpoint-unverifiable", WARNING, "witness", _HOT, "a checkpoint a witness holds does not verify "
     "with the log's verifier key, so it was not compared"),
    ("checkpoint-signature-invalid", ERROR, "witness", _TIER, "a checkpoint does not verify with the verifier "
     "key(s)"),
    ("checkpoint-fork", ERROR, "witness", _TIER, "two checkpoints of the same size carry different roots"),
    ("checkpoint-root-mismatch", ERROR, "witness", _TIER, "the log's own checkpoint does not match the tree "
     "recomputed from the segments"),
    ("checkpoint-rollback", ERROR, "witness", _TIER, "the log's latest checkpoint is smaller than one a witness "
     "holds"),
    ("checkpoint-unchecked", WARNING, "witness", _BOTH, "a checkpoint could not be recomputed (covering segment "
     "unavailable)"),
    # --- verify-tier: hot tier, ledger and cold store reconciled (docs/VERIFY-TIER.md)
    ("missing-object", ERROR, "tier", _TIER, "a segment the ledger records as shipped (or the hot tier holds "
     "sealed) is not in cold storage"),
    ("evicted-without-cold-copy", ERROR, "tier", _TIER, "a segment was evicted from the hot tier but has no valid "
     "cold copy"),
    ("duplicate-object", ERROR, "tier", _TIER, "one segment is stored under more than one key (e.g. compressed "
     "and not)"),
    ("renamed-object", ERROR, "tier", _TIER, "an object's key does not match the segment its metadata describes "
     "(renamed, reordered or copied over another)"),
    ("unexpected-object", WARNING, "tier", _TIER, "a key under the prefix is not a segment object"),
    ("unexpected-segment-object", ERROR, "tier", _TIER, "a key under a stream's prefix looks like a segment object "
     "(seg-…, .jsonl, .zst) but its name is not a valid segment name"),
    ("unshipped-object", ERROR, "tier", _TIER, "host mode: a segment object the ledger never shipped (forged, or "
     "uploaded by someone else with the shipper's write right)"),
    ("delete-marker", ERROR, "tier", _TIER, "a delete marker hides a segment object (a DELETE without version id), "
     "or the key was deleted and written again"),
    ("extra-version", ERROR, "tier", _TIER, "a segment key holds more than one object version: something was PUT "
     "over the shipped object and readers see the newest"),
    ("index-part-invalid", ERROR, "tier", _TIER, "--inventory: an object under the index prefix is not a valid "
     "index part, or sits under another part's key"),
    ("index-part-missing", ERROR, "tier", _TIER, "--inventory: index parts are missing from a stream's chain "
     "(numbers skipped)"),
    ("index-chain-broken", ERROR, "tier", _TIER, "--inventory: an index part does not name the SHA-256 of the part "
     "before it (a part was rewritten), or two parts claim one number"),
    ("index-part-replaced", ERROR, "tier", _TIER, "--inventory: an index part's key holds more than one version or a "
     "delete marker: the index was rewritten or hidden"),
    ("index-signature-invalid", ERROR, "tier", _TIER, "--inventory: an index part's signed note does not verify "
     "with the log's key or does not describe the part as read, or a part is unsigned after a signed one (or "
     "with --require-signed-index)"),
    ("index-part-unsigned", WARNING, "tier", _TIER, "--inventory: index parts carry no signature (a shipper "
     "without [signing]): a rewritten part without versioning evidence, the newest in particular, is not "
     "detectable"),
    ("index-signature-unchecked", WARNING, "tier", _TIER, "--inventory: index parts are signed but no --vkey was "
     "given: their signatures were not checked"),
    ("versions-unchecked", WARNING, "tier", _TIER, "object versions could not be listed (backend or permission): "
     "delete markers and overwritten versions were not checked"),
    ("ledger-missing", WARNING, "tier", _TIER, "host mode without the shipper's ledger: cold objects cannot be "
     "accounted for, eviction cannot be told from deletion"),
    ("hot-altered", ERROR, "tier", _TIER, "a hot segment's bytes differ from what the ledger recorded when it was "
     "sealed and shipped (edited, re-chained, appended to, swapped or renamed on the host)"),
    ("hot-segment-missing", ERROR, "tier", _TIER, "a segment the ledger holds as not evicted is gone from the hot "
     "tier (deleted or renamed outside eviction)"),
    ("metadata-invalid", ERROR, "tier", _TIER, "an object's metadata does not describe a segment"),
    ("unreadable-object", ERROR, "tier", _TIER, "an object could not be read (permissions, service error)"),
    ("appended-bytes", ERROR, "tier", _TIER, "the object is larger than the bytes uploaded (data appended after "
     "the seal)"),
    ("truncated-object", ERROR, "tier", _TIER, "the object is smaller than the bytes uploaded"),
    ("object-replaced", ERROR, "tier", _TIER, "the object's SHA-256 differs from the bytes uploaded (replaced or "
     "altered)"),
    ("hot-cold-mismatch", ERROR, "tier", _TIER, "the cold object describes a different segment than the hot tier / "
     "ledger (size, SHA-256, Merkle root or links differ), or hot and cold hold different records at the same "
     "seqs"),
    ("quarantined", ERROR, "tier", _TIER, "the shipper quarantined this segment: its cold copy could not be proven"),
    ("content-invalid", ERROR, "tier", _TIER, "--deep: the object does not decompress/verify (reason in the "
     "message)"),
    ("content-mismatch", ERROR, "tier", _TIER, "--deep: the decompressed segment's SHA-256, size or Merkle root "
     "differs from the metadata"),
    ("frame-invalid", ERROR, "tier", _TIER, "--deep/export: the stored zstd body breaks docs/FORMAT.md §10 (not "
     "exactly one frame with content size and checksum, a skippable frame, bytes after the frame)"),
    ("archived", WARNING, "tier", _TIER, "--deep/export: the object is in an archive storage class and must be "
     "thawed first"),
    ("not-locked", ERROR, "tier", _TIER, "the object is not locked in COMPLIANCE mode (or an enforced "
     "immutability policy)"),
    ("retention-too-short", ERROR, "tier", _TIER, "the object's retain-until is earlier than the retention policy "
     "requires"),
    ("expiring-soon", WARNING, "tier", _TIER, "the object's retention ends within the warning window"),
    ("worm-not-enforced", WARNING, "tier", _TIER, "the bucket/container reports no Object Lock (WORM) "
     "configuration"),
    ("encryption-differs", WARNING, "tier", _TIER, "S3: the object is encrypted otherwise than the bucket's "
     "default encryption, or than cold.sse / kms_key_id when configured (a KMS alias is not resolved; unknown "
     "when the role may not read the bucket's encryption configuration)"),
    ("overlapping-segment", ERROR, "tier", _TIER, "two cold objects claim the same seqs"),
    ("unsealed-segment", ERROR, "tier", _TIER, "a segment that is not the newest ends without a seal and the next "
     "segment does not start at its last record"),
    ("time-gap", ERROR, "tier", _TIER, "no record for longer than the heartbeat allows: possible suppression"),
    # --- encrypted events (docs/ENCRYPTION.md)
    ("does-not-open", ERROR, "crypt", _DEC, "an encrypted event's ciphertext does not open with its record key: "
     "moved, swapped, replayed or altered (docs/FORMAT.md §11)"),
    # --- pipeline monitor (docs/MONITOR.md): conditions only a running watcher can see
    ("silence", ERROR, "monitor", _MON,
     "no record and no heartbeat for longer than silence_factor x the heartbeat interval: the writer is "
     "stopped or its records are suppressed"),
    ("cold-lag", ERROR, "monitor", _MON,
     "a sealed segment has not been confirmed in cold storage within cold.max_lag"),
    ("cold-unreachable", WARNING, "monitor", _MON,
     "the monitor cannot read cold storage (the check did not run)"),
    ("hot-unreadable", ERROR, "monitor", _MON,
     "the monitor cannot read the hot tier or the shipper's ledger (the check did not run)"),
    ("witness-unreadable", WARNING, "monitor", _MON,
     "the monitor cannot read a witness or the log's checkpoint (the check did not run)"),
    # --- the PostgreSQL layer (docs/POSTGRES.md): pg verify compares data, pg check the hardening
    ("row-changed", ERROR, "pg", _PGV,
     "the row differs from the logged one; `changes` holds `{column: [logged, now]}` for every differing column"),
    ("row-deleted", ERROR, "pg", _PGV,
     "logged, no longer in the table"),
    ("row-not-logged", ERROR, "pg", _PGV,
     "in the table, not in the chain (committed while the source was blind, or before the slot existed)"),
    ("row-logged-twice", ERROR, "pg", _PGV,
     "two INSERT events for one row"),
    ("change-logged", ERROR, "pg", _PGV,
     "the chain holds an UPDATE, DELETE or TRUNCATE event: the table was changed past its triggers "
     "(`changes`: `{column: [old, new]}`)"),
    ("gap-logged", ERROR, "pg", _PGV,
     "the chain holds a gap event"),
    ("reset-logged", ERROR, "pg", _PGV,
     "the chain holds a reset event (the database's history was rewound; rows logged from the "
     "abandoned history then show as `row-deleted`)"),
    ("chain-unreadable", ERROR, "pg", _PGV,
     "a record or cold object could not be read"),
    ("replica-row-differs", ERROR, "pg", _PGV,
     "primary and replica hold different values; `changes`: `{column: [replica, primary]}`"),
    ("replica-row-missing", ERROR, "pg", _PGV,
     "a row of the primary is not on the replica"),
    ("replica-row-extra", ERROR, "pg", _PGV,
     "the replica holds a row the primary does not (typically: deleted on the primary)"),
    ("replica-lagging", WARNING, "pg", _PGV,
     "a primary row newer than the replica's newest: not applied yet, or replication stopped"),
    ("wal-level", ERROR, "pg-check", _PGC, "wal_level is not logical: the table cannot be tailed into the chain"),
    ("encoding", ERROR, "pg-check", _PGC, "the database is not UTF8"),
    ("table-missing", ERROR, "pg-check", _PGC, "the audit table does not exist"),
    ("public-privilege", ERROR, "pg-check", _PGC, "PUBLIC holds a privilege on the schema, table or sequence"),
    ("writer-cannot-insert", ERROR, "pg-check", _PGC, "the writer role cannot insert"),
    ("writer-privilege", ERROR, "pg-check", _PGC, "the writer role holds more than INSERT"),
    ("change-privilege", ERROR, "pg-check", _PGC,
     "a role other than the owner holds UPDATE, DELETE, TRUNCATE or TRIGGER"),
    ("trigger-missing", ERROR, "pg-check", _PGC, "a refusing trigger is missing"),
    ("trigger-disabled", ERROR, "pg-check", _PGC, "a refusing trigger is disabled or not enabled ALWAYS"),
    ("trigger-altered", ERROR, "pg-check", _PGC, "a refusing trigger is not as install made it: another or "
     "replaced function, a WHEN condition, a column list or other events"),
    ("event-trigger-missing", ERROR, "pg-check", _PGC, "the DDL-recording event trigger is missing"),
    ("event-trigger-disabled", ERROR, "pg-check", _PGC,
     "the DDL-recording event trigger is disabled or not enabled ALWAYS"),
    ("event-trigger-altered", ERROR, "pg-check", _PGC, "the DDL-recording event trigger is not as install made "
     "it: another event, a tag filter, another or replaced function"),
    ("publication-missing", ERROR, "pg-check", _PGC, "the publication the source reads does not exist"),
    ("publication-incomplete", ERROR, "pg-check", _PGC, "the publication lacks a table"),
    ("slot-missing", ERROR, "pg-check", _PGC, "the source's replication slot does not exist"),
    ("slot-plugin", ERROR, "pg-check", _PGC, "the slot uses another output plugin"),
    ("slot-lost", ERROR, "pg-check", _PGC, "the slot was invalidated: WAL it needed is gone"),
    ("slot-behind-retention", ERROR, "pg-check", _PGC, "the slot is past max_slot_wal_keep_size"),
    ("can-bypass", WARNING, "pg-check", _PGC, "a role that could get past the triggers (one per superuser, "
     "BYPASSRLS or REPLICATION role, non-superuser table owner, and member of a table's owner)"),
)

REGISTRY: Final[dict[str, CodeInfo]] = {
    code: CodeInfo(code, severity, family, meaning, reports) for code, severity, family, reports, meaning in _TABLE
}
assert len(REGISTRY) == len(_TABLE), "a finding code is registered twice"

# `pipeline verify --json` v1 reported every witness disagreement under one reason; the
# report keeps that value in `reason` (and adds the precise `code`) so tooling written
# against v1 keeps matching.
LEGACY_VERIFY_REASON: Final[dict[str, str]] = {
    "witness-root-mismatch": "witness-mismatch",
    "witness-ahead": "witness-mismatch",
}


def info(code: str) -> CodeInfo:
    """The registry entry of ``code``; ValueError when it is not registered."""
    entry = REGISTRY.get(code)
    if entry is None:
        raise ValueError(f"finding code {code!r} is not registered in pipeline.findings.REGISTRY")
    return entry


def codes(*, family: Family | None = None, report: str | None = None) -> dict[str, CodeInfo]:
    """The registered codes of one check ``family`` and/or carried by one verb's ``report``."""
    return {c: i for c, i in REGISTRY.items()
            if (family is None or i.family == family) and (report is None or report in i.reports)}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with the data.

    ``where`` locates it inside the segment when more than ``seq`` is known: an ``int`` is a
    byte offset in the segment file (chain checks), a ``str`` the cold object key
    (verify-tier).  ``seq`` is the record (or, for a checkpoint, the tree size) concerned."""

    code: str
    severity: Severity
    stream: str
    segment: str
    seq: int | None
    where: int | str | None
    message: str

    def __post_init__(self) -> None:
        registered = info(self.code).severity
        if self.severity != registered:
            raise ValueError(f"finding {self.code!r} is registered as {registered}, not {self.severity}")

    @classmethod
    def of(cls, code: str, stream: str, segment: str, message: str, seq: int | None = None,
           where: int | str | None = None) -> Finding:
        """A finding with the registry's severity for ``code``."""
        return cls(code, info(code).severity, stream, segment, seq, where, message)

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    @property
    def offset(self) -> int | None:
        """The byte offset in the segment file, when ``where`` is one."""
        return self.where if isinstance(self.where, int) else None

    @property
    def key(self) -> str | None:
        """The cold object key, when ``where`` is one."""
        return self.where if isinstance(self.where, str) else None

    @property
    def reason(self) -> str:
        """The code under its name before the findings model (kept for one release)."""
        return self.code

    def to_dict(self) -> dict[str, Any]:
        """The JSON form both reports print (docs/FORMAT.md §8, docs/VERIFY-TIER.md): the keys
        of both v1 finding shapes (verify's ``reason``/``offset``, verify-tier's ``code``/
        ``severity``/``key``), so that either report's readers find what they read before."""
        return {"code": self.code, "severity": self.severity, "stream": self.stream, "segment": self.segment,
                "key": self.key, "seq": self.seq, "offset": self.offset, "reason": self.code,
                "message": self.message}


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
