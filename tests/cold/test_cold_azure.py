"""Azure backend over Azurite (npm), plus a recording transport for the WORM headers.

Azurite accepts immutability and legal-hold headers without enforcing them and reports
no version-level immutability (FACTS.md), so against it the store must say "WORM not
enforced" and fail closed.  What real Azure would receive is asserted on the wire with a
recording azure-core transport; the same transport can also play an enforcing container
(by adding the headers real Azure returns) to exercise the locked path end to end.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient

from pipeline.cold import ColdRequestError, ColdSettings, WormNotEnforcedError, open_store
from pipeline.cold.azure import AzureStore
from tests.cold.coldutil import AZURITE_KEY, write_segment

pytestmark = pytest.mark.azurite


class RecordingTransport(RequestsTransport):  # type: ignore[misc]
    """Records every request; with ``enforce=True`` answers as an enforcing Azure container
    would, echoing back the immutability policy and legal hold each blob was written with."""

    def __init__(self, enforce: bool = False) -> None:
        super().__init__()
        self.enforce = enforce
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._policies: dict[str, dict[str, str]] = {}

    def send(self, request: Any, **kwargs: Any) -> Any:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.url, headers))
        path = request.url.split("?")[0]
        if request.method == "PUT" and "x-ms-immutability-policy-until-date" in headers:
            self._policies[path] = {k: headers[k] for k in headers if k.startswith(("x-ms-immutability",
                                                                                    "x-ms-legal-hold"))}
        response = super().send(request, **kwargs)
        if self.enforce:
            extra: dict[str, str] = {}
            if "restype=container" in request.url and request.method == "GET":
                extra["x-ms-immutable-storage-with-versioning-enabled"] = "true"
            elif request.method in ("HEAD", "GET") and path in self._policies:
                extra.update(self._policies[path])
            # Both views: the transport response's own header map and the raw one.
            for h in (response.headers, response.internal_response.headers):
                h.update(extra)
        return response

    def puts(self) -> list[dict[str, str]]:
        return [h for m, _u, h in self.requests if m == "PUT"]


def azure_store(container: str, transport: Any = None, **settings: Any) -> AzureStore:
    st = open_store(f"az://devstoreaccount1/{container}/audit", ColdSettings(**settings), transport=transport)
    assert isinstance(st, AzureStore)
    return st


def test_azurite_is_reported_as_not_enforcing_and_put_fails_closed(azure_container: str, tmp_path: Path) -> None:
    store = azure_store(azure_container)
    caps = store.capabilities()
    assert not caps.worm_enforced and "WORM not enforced" in caps.reason and "Azurite" in caps.reason
    path, man = write_segment(tmp_path)
    with pytest.raises(WormNotEnforcedError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert path.name in str(ei.value)
    assert list(store.list()) == []
    for text in (str(ei.value), ei.value.diagnostics(), repr(store), repr(caps)):
        assert AZURITE_KEY not in text and "AccountKey" not in text


def test_unlocked_development_round_trip(azure_container: str, tmp_path: Path) -> None:
    store = azure_store(azure_container, allow_unlocked=True)
    store.capabilities()
    path, man = write_segment(tmp_path, records=300)
    store.requests.clear()
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok, res.verify.describe()
    assert res.lock_status == "UNLOCKED (allowed for development)"
    assert dict(store.requests) == {"PUT": 1, "HEAD": 1, "GET": 1}  # upload, properties, read-back
    assert store.verify(res.key, man, deep=True).ok
    again = store.put_segment("app", path.name, str(path), man)
    assert not again.created and again.verify.ok
    # Azurite does not enforce the policy: the verifier without allow_unlocked says so.
    strict = azure_store(azure_container).verify(res.key, man)
    assert not strict.ok and strict.reasons == ["not-locked"]
    assert [o.key for o in store.list("app/")] == [res.key]


def test_worm_headers_on_the_wire_and_enforced_path(azure_container: str, tmp_path: Path) -> None:
    transport = RecordingTransport(enforce=True)
    store = azure_store(azure_container, transport=transport, legal_hold=True, retention_days=30)
    assert store.capabilities().worm_enforced
    path, man = write_segment(tmp_path)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok, res.verify.describe()
    assert res.lock_status.startswith("LOCKED until ")
    (put,) = transport.puts()
    assert put["x-ms-immutability-policy-mode"] == "Locked"
    until = email.utils.parsedate_to_datetime(put["x-ms-immutability-policy-until-date"])
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert abs((until - expected).total_seconds()) < 120
    assert put["x-ms-legal-hold"] == "true"
    assert put["if-none-match"] == "*"
    assert "content-md5" in put
    assert put["x-ms-meta-worm_sha256"] == man.sha256


def test_multi_block_upload_carries_headers_on_put_block_list(azure_container: str, tmp_path: Path) -> None:
    mib = 1 << 20
    transport = RecordingTransport(enforce=True)
    store = azure_store(azure_container, transport=transport, compression="none", part_size=5 * mib,
                        multipart_threshold=5 * mib)
    path, man = write_segment(tmp_path, records=13000, payload=900)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok, res.verify.describe()
    blocks = [(u, h) for m, u, h in transport.requests if m == "PUT" and "comp=block&" in u + "&"]
    commits = [h for m, u, h in transport.requests if m == "PUT" and "comp=blocklist" in u]
    assert len(blocks) == 3 and all("content-md5" in h for _u, h in blocks)  # MD5 per request
    assert len(commits) == 1 and commits[0]["x-ms-immutability-policy-mode"] == "Locked"


def test_legal_hold_on_azurite_reports_emulator(azure_container: str, azure_env: str, tmp_path: Path) -> None:
    store = azure_store(azure_container, allow_unlocked=True)
    path, man = write_segment(tmp_path)
    res = store.put_segment("app", path.name, str(path), man)
    with pytest.raises(ColdRequestError) as ei:
        store.set_legal_hold(res.key, True)
    assert "does not implement" in str(ei.value) and ei.value.segment == path.name


def test_tampered_blob_detected_on_read_back(azure_container: str, azure_env: str, tmp_path: Path) -> None:
    store = azure_store(azure_container, allow_unlocked=True)
    path, man = write_segment(tmp_path)
    res = store.put_segment("app", path.name, str(path), man)
    # Azurite does not enforce immutability, so the blob can be replaced behind our back:
    # the SHA-256 read-back is what notices.
    cc = ContainerClient.from_connection_string(azure_env, azure_container)
    props = cc.get_blob_client(res.key).get_blob_properties()
    cc.get_blob_client(res.key).upload_blob(b"not the segment", overwrite=True, metadata=props.metadata)
    result = store.verify(res.key, man)
    assert not result.ok and "stored-sha256-mismatch" in result.reasons
