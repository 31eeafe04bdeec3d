"""A tiny application that writes audit events to the worm-pipeline sidecar.

It shares the sidecar's network namespace (as containers in one Kubernetes pod do), so
the ingest endpoint on 127.0.0.1:8087 is reachable; it authenticates with the bearer
token from the shared secrets volume and sends NDJSON batches.  Standard library only.

Environment: AUDIT_INGEST_URL, AUDIT_TOKEN_FILE, DEMO_INTERVAL (seconds between
batches), DEMO_BATCH (events per batch), DEMO_BATCHES (stop after this many; 0 = run
until stopped).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid

URL = os.environ.get("AUDIT_INGEST_URL", "http://127.0.0.1:8087/v1/events")
TOKEN_FILE = os.environ.get("AUDIT_TOKEN_FILE", "/etc/worm-pipeline/secrets/ingest-token")
INTERVAL = float(os.environ.get("DEMO_INTERVAL", "2"))
BATCH = int(os.environ.get("DEMO_BATCH", "5"))
BATCHES = int(os.environ.get("DEMO_BATCHES", "0"))

USERS = ["alice", "bob", "carol", "dave"]
ACTIONS = ["login", "logout", "view_invoice", "update_card", "refund", "export_report"]

running = True


def _stop(signum: int, frame: object) -> None:
    global running
    running = False


def event(seq: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "seq": seq,
        "actor": random.choice(USERS),
        "action": random.choice(ACTIONS),
        "outcome": "success",
        "source_ip": "192.0.2.10",
        "app": "demo-shop",
    }


def send(lines: list[dict[str, object]], token: str) -> int:
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
    request = urllib.request.Request(  # noqa: S310 - URL comes from our own configuration
        URL, data=body, method="POST",
        headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    token = ""
    seq = 0
    sent = 0
    while running and (BATCHES == 0 or sent < BATCHES):
        try:
            token = token or open(TOKEN_FILE).read().strip()  # noqa: SIM115
            batch = [event(seq + i) for i in range(BATCH)]
            status = send(batch, token)
            seq += BATCH
            sent += 1
            print(f"demo-app: batch {sent} ({BATCH} events) -> HTTP {status}", flush=True)
        except FileNotFoundError:
            print(f"demo-app: waiting for {TOKEN_FILE}", flush=True)
        except urllib.error.HTTPError as exc:
            # 429: the sidecar applies backpressure (hot disk past high water): back off.
            print(f"demo-app: HTTP {exc.code} {exc.reason}; retrying", flush=True)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            print(f"demo-app: sidecar not reachable ({exc}); retrying", flush=True)
        time.sleep(INTERVAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
