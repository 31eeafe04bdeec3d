"""The monitor's findings: one small record per condition, adapted from the library's.

The verifiers report ``pipeline.findings.Finding``s; the monitor keeps each as a
``MonitorFinding``: the same fields, with ``where`` naming what was watched (hot, cold,
ledger, witness) instead of an offset or key, because an alert's identity is the condition
(below).  Every code is in the one registry (``pipeline.findings``): the library's, and the
few conditions only a running monitor can see (family "monitor", ``MONITOR_CODES``).

A finding's ``key`` identifies the *condition* (code, stream, segment): the alert for it
fires once, is re-sent while the condition holds, and resolves when a later check no
longer finds it.  Seq and message may change between checks without making a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.findings import ERROR, WARNING, Finding, codes, info
from pipeline.verify import chain

__all__ = ["ERROR", "MONITOR_CODES", "WARNING", "MonitorFinding", "alertname_for", "from_chain", "from_tier",
           "severity_of"]

# Conditions that exist only while watching a live system (nothing stored shows them): their
# view of the one registry (pipeline.findings, family "monitor"; docs/MONITOR.md's table).
MONITOR_CODES: dict[str, tuple[str, str]] = {c: (i.severity, i.meaning) for c, i in codes(family="monitor").items()}


def severity_of(code: str) -> str:
    """The registry's severity (ValueError for a code nothing registered)."""
    return info(code).severity


# Alert names group codes by what an operator does about them (docs/MONITOR.md lists them).
_ALERTNAMES: dict[str, tuple[str, ...]] = {
    "WormLogTampered": (*chain.REASONS, "hot-altered", "hot-segment-missing", "time-gap"),
    "WormColdObjectInvalid": ("missing-object", "duplicate-object", "renamed-object", "metadata-invalid",
                              "unreadable-object", "appended-bytes", "truncated-object", "object-replaced",
                              "hot-cold-mismatch", "not-locked", "retention-too-short", "delete-marker",
                              "extra-version", "unshipped-object", "quarantined", "expiring-soon"),
    "WormEvictedWithoutColdCopy": ("evicted-without-cold-copy",),
    "WormColdLag": ("cold-lag",),
    "WormStreamSilent": ("silence",),
    "WormWitnessInconsistent": ("checkpoint-signature-invalid", "checkpoint-fork", "checkpoint-root-mismatch",
                                "witness-root-mismatch", "witness-ahead", "checkpoint-rollback"),
    "WormWitnessStale": ("witness-stale",),
    "WormMonitorCannotCheck": ("cold-unreachable", "hot-unreadable", "witness-unreadable", "checkpoint-unchecked"),
}
_BY_CODE = {code: name for name, codes in _ALERTNAMES.items() for code in codes}


def alertname_for(code: str) -> str:
    return _BY_CODE.get(code, "WormMonitorFinding")


@dataclass(frozen=True)
class MonitorFinding:
    code: str
    stream: str
    segment: str
    message: str
    seq: int | None = None
    where: str = ""  # hot | cold | witness:<location> | ledger

    @property
    def severity(self) -> str:
        return severity_of(self.code)

    @property
    def key(self) -> str:
        """The condition's identity (one alert per key)."""
        return f"{self.code}|{self.stream}|{self.segment}|{self.where}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "stream": self.stream, "segment": self.segment,
                "seq": self.seq, "where": self.where, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MonitorFinding:
        return cls(d["code"], d["stream"], d["segment"], d["message"], d.get("seq"), d.get("where", ""))


def from_chain(f: Finding, where: str = "hot") -> MonitorFinding:
    return MonitorFinding(f.code, f.stream, f.segment, f.message, f.seq, where)


def from_tier(f: Finding, where: str = "cold") -> MonitorFinding:
    return MonitorFinding(f.code, f.stream, f.segment, f.message, f.seq, where)
