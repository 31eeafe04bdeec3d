"""The monitor's findings: one small record per condition, adapted from the library's.

The verifiers keep their own finding types (``verify.chain.Finding``, ``verify.tier.TierFinding``,
the witness audit's dicts); the monitor turns each into a ``MonitorFinding`` with the fields
of the project's common finding model (code, severity, stream, segment, seq, where,
message), so that switching to that model is a change of this module only.  Codes are the
library's (``verify.chain.REASONS``, ``verify.tier.CODES``); the few conditions only a
running monitor can see have codes of their own, listed in ``MONITOR_CODES``.

A finding's ``key`` identifies the *condition* (code, stream, segment): the alert for it
fires once, is re-sent while the condition holds, and resolves when a later check no
longer finds it.  Seq and message may change between checks without making a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.verify import chain
from pipeline.verify.tier import CODES, ERROR, WARNING, TierFinding

__all__ = ["ERROR", "MONITOR_CODES", "WARNING", "MonitorFinding", "alertname_for", "from_chain", "from_tier",
           "severity_of"]

# Conditions that exist only while watching a live system (nothing stored shows them).
MONITOR_CODES: dict[str, tuple[str, str]] = {
    "silence": (ERROR, "no record and no heartbeat for longer than silence_factor x the heartbeat interval: the "
                       "writer is stopped or its records are suppressed"),
    "cold-lag": (ERROR, "a sealed segment has not been confirmed in cold storage within cold.max_lag"),
    "cold-unreachable": (WARNING, "the monitor cannot read cold storage (the check did not run)"),
    "hot-unreadable": (ERROR, "the monitor cannot read the hot tier or the shipper's ledger (the check did not run)"),
    "witness-unreadable": (WARNING, "the monitor cannot read a witness or the log's checkpoint (the check did not "
                                    "run)"),
}


def severity_of(code: str) -> str:
    if code in MONITOR_CODES:
        return MONITOR_CODES[code][0]
    return CODES.get(code, (ERROR, ""))[0]


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


def from_chain(f: chain.Finding, where: str = "hot") -> MonitorFinding:
    # ``reason`` is the chain finding's code before the common model (which calls it ``code``)
    code = getattr(f, "code", None) or f.reason
    return MonitorFinding(code, f.stream, f.segment, f.message, f.seq, where)


def from_tier(f: TierFinding, where: str = "cold") -> MonitorFinding:
    return MonitorFinding(f.code, f.stream, f.segment, f.message, f.seq, where)
