"""The redaction corpus (issue 14): secret shapes that must be redacted wherever they sit
(as a key, a nested value, an array item, inside free text) and look-alike non-secrets
that must be stored unchanged.  Deterministic (seeded); the values are fake but
well-formed.  Used by tests/test_redaction_corpus.py and bench/bench_sanitise.py."""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_R = random.Random(14)
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


def _rand(alphabet: str, n: int) -> str:
    return "".join(_R.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(_R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i & 1 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Secret:
    category: str
    sensitive: str  # what must never be stored
    value: str | None = None  # a value-shaped secret (the string holding it)
    name: str | None = None  # a secret named by its key (the value is ``sensitive``)
    text: str = ""  # the free-text form

    def placements(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(placement, event) for a key, a nested value, an array and free text."""
        if self.value is not None:
            yield "key", {self.value: 1, "n": 1}
            yield "nested", {"cfg": {"env": {"v": self.value}}}
            yield "array", {"items": ["first", self.value, 3]}
        else:
            assert self.name is not None
            yield "key", {self.name: self.sensitive, "user": "alice"}
            yield "nested", {"cfg": {"db": {self.name: self.sensitive}}}
            yield "array", {"items": [{"x": 1}, {self.name: self.sensitive}]}
        yield "text", {"msg": self.text}


def _value(category: str, value: str, text: str | None = None, sensitive: str | None = None) -> Secret:
    return Secret(category, sensitive or value, value=value, text=text or f"deploy used {value} then failed")


def _named(category: str, name: str, value: str, sep: str = "=") -> Secret:
    return Secret(category, value, name=name, text=f"refund 1 issued {name}{sep}{value} by ops")


def _jwt(alg: str, claims: str, sig: bool = True, parts: int = 3) -> str:
    head = _b64url((f'{{"alg":"{alg}","typ":"JWT"}}').encode())
    body = _b64url(claims.encode())
    tail = [_rand(ALNUM + "-_", 43) if sig else ""]
    if parts == 5:
        return ".".join([head, _rand(ALNUM + "-_", 40), _rand(ALNUM + "-_", 16), body, _rand(ALNUM + "-_", 22)])
    return ".".join([head, body, *tail])


def _pem(kind: str) -> tuple[str, str]:
    body = "\n".join(_rand(B64, 64) for _ in range(4))
    label = f"{kind} PRIVATE KEY" if kind else "PRIVATE KEY"
    if kind == "PGP":
        label = "PGP PRIVATE KEY BLOCK"
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", body


def build_secrets() -> list[Secret]:
    out: list[Secret] = []
    for p in ("ghp", "gho", "ghu", "ghs", "ghr"):
        for _ in range(2):
            out.append(_value("github", f"{p}_{_rand(ALNUM, 36)}"))
    for _ in range(2):
        out.append(_value("github", f"github_pat_{_rand(ALNUM, 22)}_{_rand(ALNUM, 59)}"))
    for p in ("glpat", "glptt", "glrt", "gldt"):
        for _ in range(2):
            out.append(_value("gitlab", f"{p}-{_rand(ALNUM + '_-', 20)}"))
    for p in "baprse":
        out.append(_value("slack", f"xox{p}-{_R.randrange(10**11, 10**12)}-{_R.randrange(10**11, 10**12)}-"
                                   f"{_rand(ALNUM, 24)}"))
    out.append(_value("slack", f"xapp-1-A{_rand(string.ascii_uppercase + string.digits, 10)}-"
                               f"{_R.randrange(10**12, 10**13)}-{_rand(string.hexdigits.lower(), 64)}"))
    for _ in range(2):
        hook = f"T{_rand(string.ascii_uppercase, 8)}/B{_rand(string.ascii_uppercase, 8)}/{_rand(ALNUM, 24)}"
        out.append(_value("slack", f"https://hooks.slack.com/services/{hook}", sensitive=hook))
    for p in ("sk_live", "sk_test", "rk_live", "rk_test"):
        for _ in range(2):
            out.append(_value("stripe", f"{p}_{_rand(ALNUM, 24)}"))
    for _ in range(2):
        out.append(_value("stripe", f"whsec_{_rand(ALNUM, 32)}"))
    for _ in range(3):
        out.append(_value("google", f"AIza{_rand(ALNUM + '_-', 35)}"))
    for _ in range(2):
        key = _rand(B64, 86) + "=="
        conn = f"DefaultEndpointsProtocol=https;AccountName=acct{_R.randrange(100)};AccountKey={key};" \
               "EndpointSuffix=core.windows.net"
        out.append(_value("azure", conn, text=f"storage: {conn}", sensitive=key))
    for _ in range(2):
        sig = _rand(ALNUM, 43).replace("a", "%2B") + "%3D"
        url = f"https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&se=2026-12-01T00%3A00%3A00Z&sp=r&sig={sig}"
        out.append(_value("azure", url, sensitive=sig))
    for _ in range(3):
        out.append(_value("npm", f"npm_{_rand(ALNUM, 36)}"))
    for _ in range(2):
        out.append(_value("pypi", f"pypi-AgEIcHlwaS5vcmc{_rand(ALNUM + '_-', 70)}"))
    for p in ("AKIA", "ASIA", "AROA", "AIDA"):
        out.append(_value("aws", p + _rand(string.ascii_uppercase + "234567", 16)))
    for _ in range(3):  # AWS secret access keys: in context only (named, or "aws" in the text)
        s = _rand(string.ascii_uppercase, 5) + _rand(string.ascii_lowercase, 5) + _rand(B64, 30)
        out.append(Secret("aws", s, name="aws_secret_access_key", text=f"export AWS_SECRET_ACCESS_KEY={s}"))
    s = _rand(string.ascii_uppercase, 5) + _rand(string.ascii_lowercase, 5) + _rand(B64, 30)
    out.append(Secret("aws", s, name="aws_key", text=f"aws credentials AKIAIOSFODNN7EXAMPLE / {s}"))
    s = _rand(string.ascii_uppercase, 5) + _rand(string.ascii_lowercase, 5) + _rand(B64, 30)
    out.append(Secret("aws", s, name="AWSSecretKey", text=f"aws secret {s} rotated"))
    out.append(_value("jwt", _jwt("HS256", '{"sub":"alice","iat":1700000000}')))
    out.append(_value("jwt", _jwt("RS256", '{"iss":"https://idp","aud":"api","exp":1900000000}')))
    out.append(_value("jwt", _jwt("none", '{"sub":"bob"}', sig=False)))
    out.append(_value("jwt", _jwt("RSA-OAEP", '{"enc":"A256GCM"}', parts=5)))
    for kind in ("RSA", "EC", "OPENSSH", "ENCRYPTED", "DSA", "", "PGP"):
        pem, body = _pem(kind)
        out.append(_value("pem", pem, text=f"key material:\n{pem}\nend", sensitive=body.split("\n")[1]))
    for url, pw in (("postgres://app:{pw}@db.internal:5432/orders", "Pg{}"),
                    ("mysql://root:{pw}@10.0.0.5/mysql", "My{}"),
                    ("mongodb+srv://svc:{pw}@cluster0.example.net/?retryWrites=true", "Mo{}"),
                    ("redis://default:{pw}@cache:6379/0", "Rd{}"),
                    ("amqp://guest:{pw}@mq:5672/", "Mq{}"),
                    ("https://deploy:{pw}@git.example.com/repo.git", "Gt{}")):
        p = pw.format(_rand(ALNUM, 12))
        out.append(_value("url", url.format(pw=p), sensitive=p))
    for scheme in ("Bearer", "bearer", "Basic"):
        tok = _rand(ALNUM + "-._~+/", 32)
        out.append(_value("bearer", f"{scheme} {tok}", text=f"Authorization: {scheme} {tok}", sensitive=tok))
    cards = [("4", 16), ("51", 16), ("55", 16), ("22", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16),
             ("35", 16), ("36", 14)]
    seps = [" ", "-", ".", "/", "_", ""]
    for i, (prefix, length) in enumerate(cards):
        digits = _luhn_complete(prefix, length)
        sep = seps[i % len(seps)]
        shown = sep.join(digits[j:j + 4] for j in range(0, len(digits), 4))
        out.append(Secret("card", digits, value=shown, text=f"paid with {shown}, thanks"))
    # cards written as JSON numbers (checked in test_redaction_corpus separately)
    named = [("pwd", "hunter2"), ("pass", "s3cr3t!"), ("passcode", "448812"), ("password", "correcthorse"),
             ("private-key", "MIIEvQIBADANBgkqhkiG9w0"), ("private_key", "MIIEowIBAAKCAQEA"),
             ("PrivateKey", "MHcCAQEEIBr7"), ("sessionid", "9f8e7d6c5b4a"), ("session-id", "a1b2c3d4e5"),
             ("ssn", "078-05-1120"), ("api_key", "k-123-abc"), ("client_secret", "cs-998877"),
             ("Authorization", "Digest abc123"), ("cookie", "sid=abc123xyz"), ("jwt", "tok-not-even-a-jwt"),
             ("token", "t0k3n-value"), ("X-Auth-Token", "xat-5566"), ("otp", "491823"), ("cvv", "737"),
             ("passphrase", "tr0ub4dor&3"), ("connection_string", "Server=db;Uid=sa;Pwd=Sql!2026"),
             ("DB_PASSWORD", "dbpw-2026"), ("userPwd", "pw-4455"), ("refreshToken", "rt-7788"),
             ("accesstoken", "at-6611"), ("p\u0430ssword", "cyrillic-a"), ("pass\u200bword", "zero-width"),
             ("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "fullwidth"), ("pa\u0301ssword", "combining"),
             ("\u03a1ASSWORD", "greek-rho"), ("se\u0441ret", "cyrillic-es")]
    for i, (name, value) in enumerate(named):
        out.append(_named("key-name", name, value, sep="=" if i % 2 else ": "))
    return out


def build_lookalikes() -> list[str]:
    """Values that resemble secrets but are not: each must be stored unchanged."""
    out: list[str] = []
    for _ in range(15):
        out.append(f"{_R.getrandbits(32):08x}-{_R.getrandbits(16):04x}-{_R.getrandbits(16):04x}-{_R.getrandbits(16):04x}-{_R.getrandbits(48):012x}")
    for bits in (256, 160, 128):
        for _ in range(6):
            out.append(f"{_R.getrandbits(bits):0{bits // 4}x}")
    for _ in range(8):
        out.append(f"00-{_R.getrandbits(128):032x}-{_R.getrandbits(64):016x}-01")  # W3C traceparent
    for _ in range(6):
        out.append(f"{_R.getrandbits(64):016x}")  # span ids
    for _ in range(10):
        out.append(f"ORD-2026-{_R.randrange(10**6):06d}")
    for _ in range(5):
        out.append(f"INV{_R.randrange(10**9, 10**10)}")
    for _ in range(5):
        out.append(str(_R.randrange(1_600_000_000_000, 1_900_000_000_000)))  # epoch milliseconds
    out += ["1700000000123456789", "978-3-16-148410-0", "+1 415 555 0100", "4111 1111 1111 1112",
            "5555-5555-5555-4445", "10.20.30.40", "2026-11-21T12:30:45.123456Z", "v1.31.2", "sha256:" + "ab" * 32]
    out += ["passage", "compass", "bypass mode", "passport check", "tokenizer", "max_tokens", "keyboard", "monkey",
            "author", "authority", "signal", "sigma", "pinned", "shipping", "inside", "sessions list",
            "secretary", "the keys", "reset link sent"]
    out += ["https://example.com/a?b=c&d=e", "https://example.com/@alice/posts", "alice@example.com",
            "mailto:bob@example.org", "postgres://db.internal:5432/orders", "s3://bucket/prefix/key",
            "git@github.com:org/repo.git", "status: ok", "passage: 12", "mode=fast", "user=alice action=login",
            "retries: 3", "RBAC: allowed by RoleBinding", "system:serviceaccount:payments:sa-3",
            "arn:aws:sts::123456789012:assumed-role/app-3/s17", "eventSource: s3.amazonaws.com",
            "task_live_stream", "disk_test_run", "checksum AKIA", "Bearer", "basic plan", "keyID=7",
            "session started", "skip_live_reload", "ghost_town", "glad-to-help", "xoxo-hugs", "npm_config ok",
            "eyeJ", "-----BEGIN CERTIFICATE-----", "aws region eu-west-1 " + "a" * 40,
            "aws etag " + f"{_R.getrandbits(160):040x}"]
    return out


# phrases that name a secret without holding one: stored unchanged as values and in text
# (as a key name they would be judged secret-looking: see docs/REDACTION.md)
LOOKALIKE_PHRASES = ["password policy updated", "token bucket refill", "rotate the api key monthly",
                     "session expired", "secret manager unavailable"]

LOOKALIKE_KEYS = ["passage", "compass", "bypass", "max_tokens", "keyboard", "monkey",
                  "author", "authority", "sigma", "shipping", "inside", "secretary", "authorization.k8s.io/decision",
                  "trace_id", "span_id", "request_id", "order_number", "etag", "checksum", "session_count",
                  "pinned", "passport_country", "key", "sort_key", "partition_key", "public_key_id", "prompt_tokens"]

SECRETS = build_secrets()
LOOKALIKES = build_lookalikes() + LOOKALIKE_PHRASES


def lookalike_placements(value: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if value not in LOOKALIKE_PHRASES:
        yield "key", {value: 1}
    yield "nested", {"cfg": {"ref": {"v": value}}}
    yield "array", {"items": ["first", value]}
    yield "text", {"msg": f"ref {value} ok"}
