"""Differential test of the syslog parser: the pure-Python ``parse_message`` is the
reference (docs/INGEST.md §7), and every accelerated path (``frame_events``, and the C
``syslog_events`` when built) must return exactly the same events for every input: same
keys in the same order (the stored JSON bytes depend on insertion order), same values and
types.  Inputs are generated around the grammar's edges (RFC 5424 and RFC 3164, framing
errors, bytes that are not UTF-8) and taken from a fixed corpus of what rsyslog, syslog-ng
and devices send.  ``SYSLOG_DIFF_EXAMPLES=N`` runs N examples per property (a long fuzz
run, e.g. under valgrind or AddressSanitizer)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import _accel
from pipeline.ingest import syslog
from pipeline.ingest.syslog import FrameError, frame_events, parse_message, unparsed

native = _accel.native
EXAMPLES = int(os.environ.get("SYSLOG_DIFF_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_identical(got: Any, want: Any, where: str = "event") -> None:
    """``got == want`` and more: the same types (str is not bytes, a list is not a tuple),
    and dicts with their keys in the same order."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_identical(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def reference(items: list[tuple[bytes, str | None]]) -> list[dict[str, Any]]:
    return [unparsed(msg, err) if err is not None else parse_message(msg) for msg, err in items]


def check(raws: list[bytes], errors: list[str | None] | None = None) -> None:
    items = list(zip(raws, errors or [None] * len(raws), strict=True))
    want = reference(items)
    assert_identical(frame_events(items, 0), want, "frame_events")
    # RELP's items: (txnr, command, data, error)
    relp_items = [(i, "syslog", msg, err) for i, (msg, err) in enumerate(items)]
    assert_identical(frame_events(relp_items, 2), want, "frame_events(relp)")
    if native is not None:
        assert_identical(native.syslog_events(items, 0, parse_message, unparsed), want, "native")


# ---------------------------------------------------------------------- generators

ASCII_PRINT = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
# a few bytes of every kind the grammar cares about: delimiters, escapes, controls,
# non-ASCII UTF-8 (2, 3 and 4 bytes), invalid UTF-8, a surrogate's encoding, a BOM
ODD = [b" ", b"-", b"[", b"]", b"=", b'"', b"\\", b"\\\"", b"\\\\", b"\\]", b"\\n", b":", b"\t", b"\n", b"\r",
       b"\x00", b"\x7f", "é".encode(), "€".encode(), "𝄞".encode(), b"\xe9", b"\xff", b"\xc3", b"\xed\xa0\x80",
       b"\xef\xbb\xbf", "٣".encode(), b"<", b">", b"1"]


def chunks(alphabet: st.SearchStrategy[bytes], max_size: int = 12) -> st.SearchStrategy[bytes]:
    return st.lists(alphabet, max_size=max_size).map(b"".join)


TOKEN = st.one_of(ASCII_PRINT.map(lambda c: c.encode()), st.sampled_from(ODD))
TEXT = chunks(TOKEN, 16)


@st.composite
def field(draw: st.DrawFn, limit: int) -> bytes:
    """A header field: NILVALUE, printable ASCII around its length limit, or anything."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return b"-"
    if kind in (1, 2):
        n = draw(st.sampled_from([1, 2, limit - 1, limit, limit + 1]))
        ch = draw(ASCII_PRINT).encode()
        return (ch * max(1, n))[:max(1, n)]
    if kind == 3:
        return draw(st.text(ASCII_PRINT, min_size=1, max_size=10)).encode()
    return draw(TEXT)


@st.composite
def pri(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 6))
    if kind <= 2:
        return b"<%d>" % draw(st.integers(0, 191))
    if kind == 3:
        return b"<%d>" % draw(st.sampled_from([191, 192, 199, 255, 999, 0, 1]))
    if kind == 4:
        return b"<0%d>" % draw(st.integers(0, 99))  # leading zero
    if kind == 5:
        return b"<" + draw(st.sampled_from([b"", b"1000", b"x", b"-1", b"00", b"13"])) + b">"
    return draw(st.sampled_from([b"", b"<13", b"13>", b"<>", b"<1>"]))


@st.composite
def timestamp(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return b"-"
    if kind <= 2:
        date = draw(st.sampled_from([b"2026-12-06", b"2003-10-11", b"0000-00-00", b"9999-99-99"]))
        time_ = draw(st.sampled_from([b"18:00:00", b"22:14:15", b"99:99:99"]))
        frac = draw(st.sampled_from([b"", b".", b".1", b".003", b".000000", b".1234567", b".12345678"]))
        zone = draw(st.sampled_from([b"Z", b"+00:00", b"-07:00", b"+0000", b"z", b"", b"+00:00:00"]))
        return date + b"T" + time_ + frac + zone
    if kind == 3:
        return draw(st.sampled_from([b"2026-12-06 18:00:00Z", b"Dec  6 18:00:00", b"2026-12-06T18:00:00Z ",
                                     "٢٠٢٦-١٢-٠٦T18:00:00Z".encode(), b"2026-12-06T18:00:00.\xff"]))
    return draw(TEXT)


@st.composite
def sd_value(draw: st.DrawFn) -> bytes:
    return draw(chunks(st.one_of(ASCII_PRINT.filter(lambda c: c not in '"\\').map(lambda c: c.encode()),
                                 st.sampled_from([b"\\\"", b"\\\\", b"\\]", b"\\n", b"\\", b" ", b"]", b"=",
                                                  "é".encode(), b"\xe9", b"\x00", b"\n"])), 10))


@st.composite
def sd_name(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind <= 2:
        return draw(st.sampled_from([b"origin", b"meta", b"exampleSDID@32473", b"a", b"ip", b"x" * 32,
                                     b"sequenceId", b"iut"]))
    if kind == 3:
        return draw(st.sampled_from([b"", b"x" * 33, b"a b", b"a=b", b'a"', b"a]", b"\xe9", b"a\x7f"]))
    return draw(st.text(ASCII_PRINT, min_size=1, max_size=34)).encode()


@st.composite
def sd_element(draw: st.DrawFn) -> bytes:
    params: list[tuple[bytes, bytes]] = draw(st.lists(st.tuples(sd_name(), sd_value()), max_size=4))
    repeat: bool = draw(st.booleans())
    # a repeated name (kept as a list) now and then
    if params and repeat:
        params.append((params[0][0], draw(sd_value())))
    body = b"".join(b" " + n + b'="' + v + b'"' for n, v in params)
    if draw(st.integers(0, 9)) == 0:  # break it somewhere
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.sampled_from([b"", b'"', b"\\", b" ", b"=", b"]"])) + body[cut:]
    return b"[" + draw(sd_name()) + body + b"]"


@st.composite
def structured_data(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return b"-"
    if kind == 4:
        return draw(TEXT)
    elements = draw(st.lists(sd_element(), min_size=1, max_size=3))
    if len(elements) > 1 and draw(st.booleans()):
        elements.append(elements[0])  # a repeated SD-ID
    return b"".join(elements)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    sep = draw(st.sampled_from([b" ", b" ", b"", b"  "]))
    bom = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb"]))
    body = draw(st.one_of(TEXT, st.binary(max_size=20), st.just(b"")))
    if not sep and not bom and not body:
        return b""
    return sep + bom + body


@st.composite
def well_formed_5424(draw: st.DrawFn) -> bytes:
    """Within the grammar (the C path's own case), with values near every limit."""
    head = [draw(st.sampled_from([b"-", b"2026-12-06T18:00:00Z", b"2026-12-06T18:00:00.1+01:00",
                                  b"2003-08-24T05:14:15.000003-07:00", b"0000-00-00T00:00:00.123456Z"]))]
    for limit in (255, 48, 128, 32):
        n = draw(st.sampled_from([1, 2, limit - 1, limit]))
        text = draw(st.text(ASCII_PRINT, min_size=1, max_size=6)).encode()
        head.append(b"-" if draw(st.integers(0, 3)) == 0 else (text * n)[:n])
    elements = []
    for _ in range(draw(st.integers(0, 3))):
        sd_id = draw(st.sampled_from([b"origin", b"meta", b"x@1", b"a" * 32]))
        params = draw(st.lists(st.tuples(st.sampled_from([b"ip", b"p", b"q", b"n" * 32]), sd_value()), max_size=4))
        elements.append(b"[" + sd_id + b"".join(b" " + n + b'="' + v + b'"' for n, v in params) + b"]")
    sd = b"".join(elements) or b"-"
    msg = draw(st.sampled_from([b"", b" ", b" x", b" \xef\xbb\xbf", b" \xef\xbb\xbfcaf\xc3\xa9", b"  two"]))
    if draw(st.booleans()):
        msg = b" " + draw(st.text(max_size=12)).encode()
    return b"<%d>1 " % draw(st.integers(0, 191)) + b" ".join(head) + b" " + sd + msg


@st.composite
def rfc5424(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        raw = draw(well_formed_5424())
        mutation = draw(st.integers(0, 5))
        if mutation == 0:  # one byte replaced by an odd one
            at = draw(st.integers(0, max(0, len(raw) - 1)))
            raw = raw[:at] + draw(st.sampled_from(ODD)) + raw[at + 1:]
        elif mutation == 1:  # one odd byte inserted
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.sampled_from(ODD)) + raw[at:]
        elif mutation == 2:  # truncated anywhere
            raw = raw[:draw(st.integers(0, len(raw)))]
        return raw
    version = draw(st.sampled_from([b"1", b"1", b"1", b"2", b"01", b"", b"10", b"999"]))
    head = [draw(timestamp()), draw(field(255)), draw(field(48)), draw(field(128)), draw(field(32))]
    sep = draw(st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"]))
    raw = draw(pri()) + version + b" " + sep.join(head) + b" " + draw(structured_data()) + draw(message())
    if draw(st.integers(0, 7)) == 0:  # truncated anywhere
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


@st.composite
def rfc3164(draw: st.DrawFn) -> bytes:
    parts = [draw(pri())]
    if draw(st.booleans()):
        month = draw(st.sampled_from([b"Jan", b"Dec", b"Oct", b"dec", b"Foo"]))
        day = draw(st.sampled_from([b" 6", b"06", b"6", b"31", b"  6"]))
        parts.append(month + b" " + day + b" " + draw(st.sampled_from([b"08:00:01", b"8:00:01", b"08:00"])) + b" ")
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([b"web-1 ", b"10.0.0.1 ", b"host\xe9 ", b"tag: ", b"a[1] ", b""])))
    tag = draw(st.sampled_from([b"su", b"sshd", b"kernel", b"x" * 48, b"x" * 49, b"CRON", b"t\xe9g", b""]))
    pid = draw(st.sampled_from([b"", b"[77]", b"[]", b"[a b]", b"[" + b"9" * 129 + b"]", b"[\xe9]", b"[1"]))
    colon = draw(st.sampled_from([b": ", b":", b" ", b""]))
    parts.append(tag + pid + colon + draw(TEXT))
    return b"".join(parts)


ANY_MESSAGE = st.one_of(rfc5424(), rfc3164(), st.binary(max_size=64), TEXT)


# ---------------------------------------------------------------------- properties

@SETTINGS
@given(rfc5424())
def test_rfc5424_like(raw: bytes) -> None:
    check([raw])


@SETTINGS
@given(rfc3164())
def test_rfc3164_like(raw: bytes) -> None:
    check([raw])


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    check([raw])


@SETTINGS
@given(st.lists(st.tuples(ANY_MESSAGE, st.one_of(st.none(), st.sampled_from(["too-large: x", "truncated: y"]))),
                max_size=8))
def test_batches_with_framing_errors(items: list[tuple[bytes, str | None]]) -> None:
    check([m for m, _ in items], [e for _, e in items])


# ---------------------------------------------------------------------- a fixed corpus

CORPUS = [
    # rsyslog, template RSYSLOG_SyslogProtocol23Format (docs/FORWARDERS.md), as omfwd and omrelp send it
    b"<134>1 2026-12-06T18:00:00.123456+00:00 web-1 shop 42 - - fwd-000001 order placed",
    b"<134>1 2026-12-06T18:00:00+01:00 web-1 shop 42 - -  fwd-000002 order placed",
    b"<86>1 2026-12-06T18:00:00.5-05:00 web-1 sshd 811 - - Accepted publickey for root from 10.0.0.7",
    b"<13>1 2026-12-06T18:00:00.000001Z web-1 logger - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] hello",
    # syslog-ng, flags(syslog-protocol)
    b"<134>1 2026-12-06T18:00:00+00:00 web-1 shop 42 - [meta sequenceId=\"1\"] ng-000001 order placed",
    b"<38>1 2026-12-06T18:00:00.000+00:00 web-1 syslog-ng 1234 - [meta sequenceId=\"2\"] syslog-ng starting up",
    # RFC 5424's own examples (§6.5)
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed for lonvick",
    b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
    b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
    b'eventSource="Application" eventID="1011"] \xef\xbb\xbfAn application event log entry...',
    b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
    b'eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]',
    # the benchmark's message
    b'<134>1 2026-12-06T18:00:00.000000Z web-1 orders 811 audit [audit@32473 actor="svc-orders" '
    b'outcome="success"] order.update orders/2026/11/000123456 shipped',
    # escapes, repeats, a value that is not UTF-8, a message that is not UTF-8
    b'<13>1 - h a - - [x@1 p="a\\"b\\\\c\\]d\\e" p="2" q=""][x@1 p="3"] m',
    b'<13>1 - h a - - [x@1 p="caf\xe9"] m',
    b"<13>1 - h a - - - caf\xe9",
    b"<13>1 - h a - - -",
    b"<13>1 - h a - - - ",
    b"<13>1 - - - - - -x",
    b"<0>1 - - - - - -",
    b"<191>1 - - - - - - max",
    b"<192>1 - - - - - - over",
    b"<013>1 - - - - - - leading zero",
    # RFC 3164 as devices and applications send it
    b"<134>Dec  6 18:00:00 web-1 shop[42]: fwd-000001 order placed",
    b"<34>Oct 11 22:14:15 mymachine su[77]: 'su root' failed",
    b"<13>Dec  6 08:00:01 kernel: boot",
    b"<4>kernel: [12345.678] eth0: link up",
    b"<189>52: *Mar  1 00:12:34.567: %SYS-5-CONFIG_I: Configured from console by vty0",
    b"<30>Dec  6 08:00:01 host systemd[1]: Started Session 4 of user root.",
    b"<13>Dec  6 08:00:01 h\xe9st app: x",
    b"<13>no header at all",
    b"<13>",
    b"no PRI",
    b"",
    b"\xff\xfe",
]


def test_corpus() -> None:
    check(CORPUS)
    for raw in CORPUS:
        check([raw])


def test_corpus_with_errors() -> None:
    check(CORPUS, ["too-large: kept" if i % 3 == 0 else None for i in range(len(CORPUS))])


@pytest.mark.skipif(native is None, reason="C accelerator not built")
def test_native_takes_the_common_case_itself() -> None:
    """The C path falls back to the Python reference for anything unusual; the forwarders'
    and the benchmark's well-formed RFC 5424 messages must not need it (else it is no faster)."""
    common = [raw for raw in CORPUS if raw.startswith(b"<") and raw[raw.index(b">") + 1:].startswith(b"1 ")
              and parse_message(raw)["syslog"] == "rfc5424" and "message_b64" not in parse_message(raw)]
    assert len(common) >= 10
    called: list[bytes] = []

    def fallback(raw: bytes) -> dict[str, Any]:
        called.append(raw)
        return parse_message(raw)

    assert native is not None
    assert_identical(native.syslog_events([(r, None) for r in common], 0, fallback, unparsed),
                     [parse_message(r) for r in common])
    assert called == []


@pytest.mark.skipif(native is None, reason="C accelerator not built")
def test_native_rejects_bad_arguments() -> None:
    assert native is not None
    with pytest.raises(TypeError):
        native.syslog_events([("not bytes", None)], 0, parse_message, unparsed)
    with pytest.raises((TypeError, IndexError)):
        native.syslog_events([(b"<13>1 - - - - - -",)], 0, parse_message, unparsed)
    with pytest.raises(TypeError):
        native.syslog_events([b"<13>"], 0, parse_message, unparsed)
    assert native.syslog_events([], 0, parse_message, unparsed) == []


def test_binding_follows_pipeline_no_native() -> None:
    """frame_events is the C batch call when the accelerator is loaded, the Python one otherwise."""
    if native is None:
        assert syslog._frame_events is syslog._py_frame_events
    else:
        assert syslog._frame_events is not syslog._py_frame_events


# ---------------------------------------------------------------------- RELP framing

@settings(max_examples=max(50, EXAMPLES // 3), deadline=None)
@given(st.lists(st.sampled_from([0, 1, 5, 200, 70_000, 600_000]), min_size=1, max_size=4),
       st.lists(st.integers(1, 300_000), min_size=1, max_size=30))
def test_relp_frames_whatever_the_reads(sizes: list[int], reads: list[int]) -> None:
    """RelpParser gives the same frames however the stream is cut into reads, for frames
    below and above max_frame and buffers below and above the size it parses a copy of."""
    from pipeline.ingest.stream import RelpParser

    stream = b"".join(b"%d syslog %d %s\n" % (i + 1, n, bytes([65 + i % 26]) * n) if n else b"%d syslog 0\n" % (i + 1)
                      for i, n in enumerate(sizes))
    whole = RelpParser(65_536).feed(stream)
    parser, got, pos, k = RelpParser(65_536), [], 0, 0
    while pos < len(stream):
        step = reads[k % len(reads)]
        got += parser.feed(stream[pos:pos + step])
        pos += step
        k += 1
    assert got == whole
    assert [t for t, _c, _d, _e in whole] == list(range(1, len(sizes) + 1))
    for (_t, _c, data, err), n in zip(whole, sizes, strict=True):
        assert (err is None) == (n <= 65_536 + 64) and len(data) == min(n, 65_536) and type(data) is bytes


@st.composite
def relp_stream(draw: st.DrawFn) -> bytes:
    parts = []
    for txnr in range(1, draw(st.integers(1, 8)) + 1):
        kind = draw(st.integers(0, 9))
        data = draw(st.sampled_from([b"<13>1 - - - - - - x", b"a", b"x" * 70, b"x" * 100, b"\n", b"a b\nc", b""]))
        command = draw(st.sampled_from([b"syslog", b"syslog", b"open", b"close", b"SysLog", b"x" * 32, b"x" * 33]))
        t = draw(st.sampled_from([b"%d" % txnr, b"0%d" % txnr, b"999999999", b"1234567890"]))
        if kind == 0:  # an empty frame
            parts.append(t + b" " + command + b" 0\n")
        elif kind == 1:  # a broken one: wrong length, no LF, odd bytes
            parts.append(t + b" " + command + b" %d " % (len(data) + draw(st.integers(-2, 2))) + data
                         + draw(st.sampled_from([b"\n", b"", b"x", b" "])))
        elif kind == 2:
            parts.append(draw(st.binary(max_size=12)))
        else:
            parts.append(t + b" " + command + b" %d " % len(data) + data + b"\n")
    return b"".join(parts)


def _relp_run(stream: bytes, reads: list[int], max_frame: int) -> list[Any]:
    from pipeline.ingest.stream import RelpParser

    parser, pos, k = RelpParser(max_frame), 0, 0
    got: list[Any] = []
    while pos < len(stream):
        step = reads[k % len(reads)]
        try:
            got.append(parser.feed(stream[pos:pos + step]))
        except FrameError as exc:
            got.append(("error", str(exc)))
            break
        pos += step
        k += 1
    return got


@pytest.mark.skipif(native is None, reason="C accelerator not built")
@SETTINGS
@given(relp_stream(), st.lists(st.integers(1, 200), min_size=1, max_size=10), st.sampled_from([16, 64, 65_536]))
def test_relp_native_frames_like_python(stream: bytes, reads: list[int], max_frame: int) -> None:
    """RelpParser with the C accelerator's relp_frames gives the same frames, errors and
    their places as without it, however the stream is cut."""
    from pipeline.ingest import stream as stream_mod

    with_c = _relp_run(stream, reads, max_frame)
    saved = stream_mod._relp_frames
    stream_mod._relp_frames = None
    try:
        without = _relp_run(stream, reads, max_frame)
    finally:
        stream_mod._relp_frames = saved
    assert with_c == without
    for feed in with_c:
        if isinstance(feed, list):
            for frame in feed:
                assert type(frame) is tuple and type(frame[0]) is int and type(frame[1]) is str \
                    and type(frame[2]) is bytes


# ---------------------------------------------------------------------- RFC 6587 framing

@st.composite
def syslog_stream(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 10))):
        msg = draw(st.sampled_from([b"<13>1 - - - - - - x", b"a", b"x" * 40, b"x" * 100, b"a b", b"", b"\r", b"1",
                                    b"12 ", b"\x00", b"caf\xe9"]))
        kind = draw(st.integers(0, 6))
        if kind <= 2:
            parts.append(b"%d %s" % (len(msg), msg))
        elif kind == 3:
            parts.append(b"%d %s" % (len(msg) + draw(st.integers(-3, 3)), msg))
        elif kind == 4:
            parts.append(draw(st.sampled_from([b"\n", b"\x00", b"\r\n", b"12345678901 ", b"12x ", b"9999999999 "])))
        else:
            parts.append(msg.replace(b"\n", b"") + draw(st.sampled_from([b"\n", b"\r\n", b"\n\n", b""])))
    return b"".join(parts)


def _framer_run(stream: bytes, reads: list[int], max_frame: int) -> list[Any]:
    from pipeline.ingest.syslog import Framer

    framer, pos, k = Framer(max_frame), 0, 0
    got: list[Any] = []
    while pos < len(stream):
        step = reads[k % len(reads)]
        try:
            got.append(framer.feed(stream[pos:pos + step]))
        except FrameError as exc:
            got.append(("error", str(exc)))
            return got
        pos += step
        k += 1
    got.append(("finish", framer.finish(), framer.buffered))
    return got


@pytest.mark.skipif(native is None, reason="C accelerator not built")
@SETTINGS
@given(syslog_stream(), st.lists(st.integers(1, 120), min_size=1, max_size=10), st.sampled_from([8, 50, 65_536]))
def test_framer_native_like_python(stream: bytes, reads: list[int], max_frame: int) -> None:
    """Framer with the C accelerator's syslog_frames gives the same frames, errors and
    their places as without it, however the stream is cut."""
    with_c = _framer_run(stream, reads, max_frame)
    saved = syslog._syslog_frames
    syslog._syslog_frames = None
    try:
        without = _framer_run(stream, reads, max_frame)
    finally:
        syslog._syslog_frames = saved
    assert with_c == without
    for feed in with_c:
        if isinstance(feed, list):
            assert all(type(f) is tuple and type(f[0]) is bytes for f in feed)
