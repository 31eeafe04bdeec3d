"""The value rules of pipeline/sanitise.py as they were at commit 74e4d78, before the
long-string speed-up: the oracle of the differential test (tests/test_sanitise_long_strings.py)
and nothing else.  The module-level code and the methods below are copied verbatim; only the
class around the methods is new: it takes what is not value redaction (the key judge, the
markers, the rules in force) from a ``_Compiled`` of today's sanitiser.  Do not "fix" or
speed up anything here: this file is what the new code must agree with, byte for byte.  A
rule added or changed on purpose later is added or changed here too, written plainly
(docs/REDACTION.md, "Adding a built-in rule").

Changed on purpose since (marked "since 74e4d78" below, the old code left as it was):
every rule whose trigger occurs anywhere in the string runs; a rule whose trigger the one
scan did not see (it lay inside another trigger's match, between "://" and a later "@")
runs after the others, on what they left (``redact_text_every``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from pipeline.sanitise import VALUE_RULES, _Compiled

_B64 = r"A-Za-z0-9+/"
_ID = r"A-Za-z0-9_.\-"  # identifier characters of a key in free text (ASCII part)


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# (rule, pattern, group to replace: 0 the whole match, or a group name)
_VALUE_PATTERNS: dict[str, list[tuple[re.Pattern[str], int | str]]] = {
    # PEM private keys of every kind (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP ... BLOCK); a block
    # without its END line is redacted to the end of the string
    "private-key": [(_rx(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
                         r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)", re.DOTALL), 0)],
    # JWT / JWS / JWE: a base64url JSON header ("eyJ") and at least one more dotted part (gitleaks: jwt)
    "jwt": [(_rx(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,3}"), 0)],
    # (gitleaks: github-pat, github-oauth, github-app-token, github-refresh-token, github-fine-grained-pat)
    "github-token": [(_rx(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,255}(?![A-Za-z0-9_])"), 0),
                     (_rx(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}"), 0)],
    # (gitleaks: gitlab-pat, gitlab-ptt, gitlab-rrt, gitlab-deploy-token)
    "gitlab-token": [(_rx(r"(?<![A-Za-z0-9_])gl(?:pat|ptt|rt|dt)-[A-Za-z0-9_\-]{20,}"), 0)],
    # (gitleaks: slack-bot-token, slack-user-token, slack-app-token, slack-legacy-*)
    "slack-token": [(_rx(r"(?<![A-Za-z0-9_])xox[baprse]-[A-Za-z0-9\-]{10,}"), 0),
                    (_rx(r"(?<![A-Za-z0-9_])xapp-[0-9]+-[A-Za-z0-9\-]{10,}"), 0)],
    # (gitleaks: slack-webhook-url)
    "slack-webhook": [(_rx(r"(?i:https?)://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}"),
                       0)],
    # (gitleaks: stripe-access-token; whsec_ webhook signing secrets)
    "stripe-key": [(_rx(r"(?<![A-Za-z0-9_])[sr]k_(?:live|test)_[A-Za-z0-9]{10,247}"), 0),
                   (_rx(r"(?<![A-Za-z0-9_])whsec_[A-Za-z0-9+/=]{24,}"), 0)],
    # (gitleaks: gcp-api-key)
    "google-api-key": [(_rx(r"AIza[0-9A-Za-z_\-]{35}"), 0)],
    # Azure storage account keys inside connection strings (detect-secrets: AzureStorageKeyDetector)
    "azure-storage-key": [(_rx(rf"AccountKey=(?P<secret>[{_B64}]{{20,}}={{0,2}})"), "secret")],
    # Azure shared access signatures: the sig= parameter (the signature is the secret)
    "azure-sas-token": [(_rx(r"(?<![A-Za-z0-9_.\-])sig=(?P<secret>[A-Za-z0-9%+/=]{20,})"), "secret")],
    # (gitleaks: npm-access-token)
    "npm-token": [(_rx(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"), 0)],
    # (gitleaks: pypi-upload-token) the macaroon's fixed prefix "pypi-AgEIcHlwaS5vcmc"
    "pypi-token": [(_rx(r"(?:pypi-)?AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"), 0)],
    # (gitleaks: aws-access-token; detect-secrets: AWSKeyDetector)
    "aws-access-key-id": [(_rx(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"),
                           0)],
    # aws-secret-access-key: see _redact_aws_secret (needs context in the same string)
    "aws-secret-access-key": [],
    # user:password@ in a URL or connection string (detect-secrets: BasicAuthDetector); the user is kept
    "url-credentials": [(_rx(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\\\"?#@:\x00-\x20]*:"
                             r"(?P<secret>[^/\\\"?#@\x00-\x20]+)@"), "secret")],
    "bearer-credential": [(_rx(r"(?i:\b(?:bearer|basic)\s+)(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)"), "secret")],
    # kv-secret and card-number: see _redact_kv and _redact_cards
    "kv-secret": [],
    "card-number": [],
}

# The literal trigger of each rule that has one, in decoded strings (the rule's pattern
# cannot match without it).  The other rules (aws-secret-access-key, kv-secret, custom
# patterns) check their own preconditions.
_TRIGGERED: dict[str, str] = {name: name.replace("-", "_") for name in (
    "private-key", "jwt", "github-token", "gitlab-token", "slack-token", "slack-webhook", "stripe-key",
    "google-api-key", "azure-storage-key", "azure-sas-token", "npm-token", "pypi-token", "aws-access-key-id",
    "url-credentials", "bearer-credential", "card-number")}
_RULE_TRIGGERS = re.compile("|".join(f"(?P<{_TRIGGERED[name]}>{pattern})" for name, pattern in (
    ("private-key", "-----BEGIN"), ("jwt", "eyJ"), ("github-token", "gh[pousr]_|github_pat_"),
    ("gitlab-token", "gl(?:pat|ptt|rt|dt)-"), ("slack-token", "xox[baprse]-|xapp-"),
    ("slack-webhook", r"hooks\.slack\.com/"), ("stripe-key", "[sr]k_(?:live|test)_|whsec_"),
    ("google-api-key", "AIza"), ("azure-storage-key", "AccountKey="), ("azure-sas-token", "sig="),
    ("npm-token", "npm_"), ("pypi-token", "AgEIcHlwaS5vcmc"),
    ("aws-access-key-id", "A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)"), ("url-credentials", "://[^@]*@"),
    ("bearer-credential", "(?i:bearer|basic)"), ("card-number", r"\d(?:[ .\-_/]?\d){12}"))))

# since 74e4d78: a rule runs when any alternative of its trigger is found anywhere in the string
TRIGGER_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "private_key": ("-----BEGIN",), "jwt": ("eyJ",), "github_token": ("gh[pousr]_", "github_pat_"),
    "gitlab_token": ("gl(?:pat|ptt|rt|dt)-",), "slack_token": ("xox[baprse]-", "xapp-"),
    "slack_webhook": (r"hooks\.slack\.com/",), "stripe_key": ("[sr]k_(?:live|test)_", "whsec_"),
    "google_api_key": ("AIza",), "azure_storage_key": ("AccountKey=",), "azure_sas_token": ("sig=",),
    "npm_token": ("npm_",), "pypi_token": ("AgEIcHlwaS5vcmc",),
    "aws_access_key_id": ("A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)",), "url_credentials": ("://[^@]*@",),
    "bearer_credential": ("(?i:bearer|basic)",), "card_number": (r"\d(?:[ .\-_/]?\d){12}",)}


def every_trigger(text: str) -> set[str]:
    """Since 74e4d78: the rules (their trigger groups) whose trigger occurs anywhere in ``text``."""
    return {group for group, alts in TRIGGER_ALTERNATIVES.items() if any(re.search(alt, text) for alt in alts)}


def first_scan_triggers(text: str) -> set[str]:
    """The rules (their trigger groups) that 74e4d78 ran: what one scan finds."""
    return {m.lastgroup for m in _RULE_TRIGGERS.finditer(text) if m.lastgroup is not None}


# AWS secret access keys have no prefix: 40 base64 characters, accepted only with context in
# the same string (an AWS key id, or "aws" written anywhere in it) and with both letter cases,
# which rules out hex digests (detect-secrets: AWSKeyDetector does the same with context).
_AWS_SECRET_RE = re.compile(rf"(?<![{_B64}])[{_B64}]{{40}}(?![{_B64}])")
_AWS_CONTEXT_RE = re.compile(r"(?i:aws)|(?:AKIA|ASIA)[A-Z0-9]{16}")

# key=value and key: value in free text: a secret-looking key (judged like a field name),
# optionally quoted, not itself after a ':', '=', '/' or '@' ("system:serviceaccount:auth:x"
# and paths are not key-value text), then the value (an auth scheme and its token, a quoted string, or up
# to the next space, quote, & ; , < > or backslash).  Only spaces around the separator:
# a tab or newline is escaped in the serialised bytes, where the screen could not see it.
_KV_RE = re.compile(
    rf"(?<![{_ID}\u0080-\U0010ffff:=/@])(?P<q>[\"']?)(?P<key>(?:[{_ID}]|[^\x00-\x7f])+)(?P=q) *[:=] *"
    r"(?:\"(?P<dq>[^\"]+)\"|'(?P<sq>[^']+)'|(?P<bare>(?i:(?:bearer|basic|token|digest|negotiate|ntlm) +)?"
    r"[^\s\"'&;,<>\\]+))")

# card candidates: 13-19 digits, optionally split by single spaces, dots, hyphens,
# underscores or slashes,
# with a known issuer prefix (Visa, Mastercard, Amex, Discover, JCB, Diners) so that epoch
# timestamps and ids are not mistaken for cards; then Luhn decides.
_CARD_RE = re.compile(
    r"(?<![\d])(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9])|35)(?:[ .\-_/]?\d){11,17}(?![\d])", re.ASCII
)
_CARD_SEPS = re.compile(r"[ .\-_/]")
_CARD_RE_BYTES = re.compile(_CARD_RE.pattern.encode(), re.ASCII)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(text: str) -> bool:
    digits = _CARD_SEPS.sub("", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _card_in(out: bytes) -> bool:
    """Whether the serialised bytes hold a card-number shape with a valid Luhn digit, also
    as a float ("4111111111111111.0").  A superset of what the card rule redacts."""
    for m in _CARD_RE_BYTES.finditer(out):  # ASCII only: the same matches as on the decoded text
        text = m.group(0).decode()
        if _is_card(text) or (text.endswith(".0") and _is_card(text[:-2])):
            return True
    return False


_ValueRule = Callable[[str, dict[str, int] | None], str]


class Reference:
    """``redact_text`` (and the Python ``card_in``) of 74e4d78 for the rules of ``compiled``."""

    def __init__(self, compiled: _Compiled) -> None:
        self.is_secret_key = compiled.is_secret_key
        self.markers = compiled.markers
        self.marker_re = compiled.marker_re
        disabled = set(compiled.rules.disable)
        value_rules: list[tuple[str, _ValueRule]] = []
        for name in VALUE_RULES:  # as _Compiled.build did at 74e4d78
            if name in disabled:
                continue
            if name == "aws-secret-access-key":
                value_rules.append((name, self._redact_aws_secret))
            elif name == "kv-secret":
                value_rules.append((name, self._redact_kv))
            elif name == "card-number":
                value_rules.append((name, self._redact_cards))
            else:
                value_rules.append((name, partial(self._redact_patterns, name, _VALUE_PATTERNS[name])))
        for name, pattern in compiled.rules.value_patterns:
            rx = re.compile(pattern)
            group: int | str = "secret" if "secret" in rx.groupindex else 0
            value_rules.append((name, partial(self._redact_patterns, name, [(rx, group)])))
        self.value_rules = tuple(value_rules)
        self.untriggered_rules = tuple(rule for name, rule in value_rules if name not in _TRIGGERED)

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        return self._redact_text(text, counts), counts

    def redact_text_every(self, text: str) -> tuple[str, dict[str, int]]:
        """Since 74e4d78: ``redact_text``, then each rule whose trigger occurs in ``text`` but
        that it did not run, in their order, on its result."""
        counts: dict[str, int] = {}
        out = self._redact_text(text, counts)
        hidden = every_trigger(text) - first_scan_triggers(text)
        for name, rule in self.value_rules:
            if _TRIGGERED.get(name) in hidden:
                out = rule(out, counts)
        return out, counts

    @staticmethod
    def card_in(out: bytes) -> bool:
        return _card_in(out)

    def _redact_text(self, text: str, counts: dict[str, int] | None) -> str:
        """A rule with a literal trigger (_RULE_TRIGGERS) runs only when the trigger occurs:
        one scan of the string decides which rules can fire."""
        first = _RULE_TRIGGERS.search(text)
        if first is None:  # the common case: only the rules without a literal trigger
            for rule in self.untriggered_rules:
                text = rule(text, counts)
            return text
        fired = {first.lastgroup, *(m.lastgroup for m in _RULE_TRIGGERS.finditer(text, first.end()))}
        for name, rule in self.value_rules:
            if name in _TRIGGERED and _TRIGGERED[name] not in fired:
                continue
            text = rule(text, counts)
        return text

    def _mark(self, name: str, counts: dict[str, int] | None) -> str:
        if counts is not None:
            counts[name] = counts.get(name, 0) + 1
        return self.markers[name]

    def _redact_patterns(self, name: str, patterns: list[tuple[re.Pattern[str], int | str]], text: str,
                         counts: dict[str, int] | None) -> str:
        for rx, group in patterns:
            if group == 0:
                text = rx.sub(lambda m: self._mark(name, counts), text)
            else:
                def sub(m: re.Match[str], g: int | str = group) -> str:
                    s, e = m.span(g)
                    if s < 0:
                        return m.group(0)
                    base = m.start(0)
                    whole = m.group(0)
                    return whole[:s - base] + self._mark(name, counts) + whole[e - base:]

                text = rx.sub(sub, text)
        return text

    def _redact_aws_secret(self, text: str, counts: dict[str, int] | None) -> str:
        if len(text) < 40 or _AWS_CONTEXT_RE.search(text) is None:
            return text

        def sub(m: re.Match[str]) -> str:
            s = m.group(0)
            if any(c.isupper() for c in s) and any(c.islower() for c in s):
                return self._mark("aws-secret-access-key", counts)
            return s

        return _AWS_SECRET_RE.sub(sub, text)

    def _redact_kv(self, text: str, counts: dict[str, int] | None) -> str:
        if ":" not in text and "=" not in text:
            return text

        def sub(m: re.Match[str]) -> str:
            if not self.is_secret_key(m.group("key")):
                return m.group(0)
            g = "dq" if m.group("dq") is not None else "sq" if m.group("sq") is not None else "bare"
            value = m.group(g)
            if self.marker_re.fullmatch(value.split(" ")[-1]) is not None:
                return m.group(0)  # already redacted by a more specific rule
            s, e = m.span(g)
            base, whole = m.start(0), m.group(0)
            return whole[:s - base] + self._mark("kv-secret", counts) + whole[e - base:]

        return _KV_RE.sub(sub, text)

    def _redact_cards(self, text: str, counts: dict[str, int] | None) -> str:
        def sub(m: re.Match[str]) -> str:
            return self._mark("card-number", counts) if _is_card(m.group(0)) else m.group(0)

        return _CARD_RE.sub(sub, text)

