"""`pipeline run` with a [sanitise] section (issue 14): the sidecar's log owns the
sanitiser built from it, ingest over HTTP and the socket applies it, SIGHUP replaces the
rules live, and the redaction counts are Prometheus metrics."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.hotutil import records, without_sender
from tests.ship.test_sidecar import Sidecar, socket_send


def test_sanitise_section_applies_on_ingest_and_reloads_with_sighup(tmp_path: Path, s3_endpoint: str,
                                                                      locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket, hot={"hot_retention": "1h"})
    sc.sections["sanitise"] = {"extra_keys": ["patient_mrn"], "disable": ["card-number"]}
    sc.write_config()
    sc.start()
    try:
        code, doc = sc.post([{"patient_mrn": "MRN-1", "card": "4111 1111 1111 1111"}, {"ward": "east"}])
        assert code == 200 and doc["accepted"] == 2
        assert all(a["ok"] for a in socket_send(sc.sock, [{"PatientMRN": "MRN-2"}]))

        def stored() -> list[dict[str, object]]:
            return [without_sender(r.data, required=False) for r in records(sc.hot / "app") if r.kind == "event"]

        evs = stored()
        assert evs[:3] == [{"patient_mrn": "[REDACTED:secret-key]", "card": "4111 1111 1111 1111"},
                           {"ward": "east"}, {"PatientMRN": "[REDACTED:secret-key]"}]
        # SIGHUP: "ward" becomes secret, cards are redacted again
        sc.sections["sanitise"] = {"extra_keys": ["patient_mrn", "ward"]}
        sc.write_config()
        assert sc.proc is not None
        sc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code, doc = sc.post([{"ward": "probe"}])
            assert code == 200
            if stored()[-1] == {"ward": "[REDACTED:secret-key]"}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the reloaded rule never applied:\n" + sc.log.read_text()[-2000:])
        sc.post([{"card": "4111 1111 1111 1111"}])
        assert stored()[-1] == {"card": "[REDACTED:card-number]"}
        status, metrics = sc.get("/metrics")
        assert status == 200
        line = next(x for x in metrics.splitlines() if x.startswith('worm_redactions_total{rule="secret-key"}'))
        assert float(line.split()[-1]) >= 3
        assert 'worm_redactions_total{rule="jwt"} 0.0' in metrics
        # a bad rule on reload is refused and the running rules stay
        sc.sections["sanitise"] = {"disable": ["no-such-rule"]}
        sc.write_config()
        sc.proc.send_signal(signal.SIGHUP)
        # the sidecar looks at the signal's flag every 0.2 s: wait for the refusal itself (a
        # fixed sleep could end before it on a loaded machine, and the first reload's
        # "configuration reloaded" line already names sanitise.disable as changed)
        deadline = time.monotonic() + 60
        while b"configuration reload refused" not in sc.log.read_bytes():
            assert time.monotonic() < deadline, "the bad rule was never refused:\n" + sc.log.read_text()[-2000:]
            time.sleep(0.1)
        sc.post([{"ward": "again"}])
        assert stored()[-1] == {"ward": "[REDACTED:secret-key]"}
        refused = next(line for line in sc.log.read_text().splitlines() if "configuration reload refused" in line)
        assert "sanitise.disable" in refused, refused
        assert b"MRN-1" not in b"".join(p.read_bytes() for p in (sc.hot / "app").glob("seg-*"))
    finally:
        assert sc.stop() == 0
