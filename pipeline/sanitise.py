"""Validate and sanitise an event before anything is written.

A mistake in an immutable log is permanent, so this stage runs before the record is
built: bad input raises ``InvalidEvent`` (nothing is written), and secret-looking fields
and values are replaced by a marker that names the rule that fired and never contains
any part of the secret (no hash of it either: a hash of a low-entropy secret can be
brute-forced).  What is detected, what is not, and how to add rules: docs/REDACTION.md.

The common case is made cheap: the event is serialised once with orjson and one screen
over those bytes (``screen``: C with the accelerator, ``_screen_python`` without; the two
are tested equal) decides whether the exact rules must run.  The screen only looks for
the literal *triggers* of the rules (a token prefix, ``eyJ``, ``-----BEGIN``, ``://`` with
an ``@``, ``key=``/``key:`` with a secret-like key, a run of 13 digits, any non-ASCII
byte...), so it can say "maybe" wrongly (that costs time) but never "no" wrongly: every
exact rule below needs its trigger to be present.  A rule added here MUST add its trigger
to the screen (both implementations) or the fast path will store what it should redact.

One ``Sanitiser`` belongs to each log (``HotLog.sanitiser``) and is used on every path into
it.  Its rules can be replaced live (``reconfigure``, on SIGHUP): everything derived from
the rules, including the caches the C fast path reads, is rebuilt and swapped in one
assignment, so a call sees either the old rules or the new ones, never a mixture.
"""

from __future__ import annotations

import math
import re
import string
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from pipeline._accel import native as _native
from pipeline.errors import PipelineError
from pipeline.format import strictjson

DEFAULT_MAX_EVENT_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64
DEFAULT_MARKER = "[REDACTED:{rule}]"

# --- rule names ------------------------------------------------------------------------
# Each name is what the marker and the metric ``worm_redactions_total{rule=...}`` show,
# and what ``[sanitise] disable = [...]`` takes.  Order is the order the value rules run in
# (specific token formats before the generic key=value and card rules).
KEY_RULE = "secret-key"
VALUE_RULES: tuple[str, ...] = (
    "private-key",
    "jwt",
    "github-token",
    "gitlab-token",
    "slack-token",
    "slack-webhook",
    "stripe-key",
    "google-api-key",
    "azure-storage-key",
    "azure-sas-token",
    "npm-token",
    "pypi-token",
    "aws-access-key-id",
    "aws-secret-access-key",
    "url-credentials",
    "bearer-credential",
    "kv-secret",
    "card-number",
)
BUILTIN_RULES: tuple[str, ...] = (KEY_RULE, *VALUE_RULES)
REDACTED = DEFAULT_MARKER.format(rule=KEY_RULE)

# --- secret-looking key names ------------------------------------------------------------
# A key name is folded (NFKC, zero-width and combining marks dropped, confusable letters
# mapped to ASCII, see fold_key) and split into lower-case words at separators and case
# changes ("X-Auth-Token" -> x auth token, "PrivateKey" -> private key).  It is secret when
#   * the words joined contain a SUBSTRING term ("db_password_hash", "AWSSecretAccessKey"), or
#   * some run of consecutive words, joined, equals a WORD term ("pass", "user_pwd",
#     "session-id"; but not "passage" or "bypass"), or
#   * some word ends with a SUFFIX term ("accesstoken", "clientsecret").
SUBSTRING_TERMS: tuple[str, ...] = (
    "password", "passwd", "passphrase", "passcode", "apikey", "privatekey", "privkey", "secretkey",
    "accesskey", "awskey", "signingkey", "masterkey", "encryptionkey", "accountkey", "clientsecret",
    "credential", "authorization", "sessionid", "sessiontoken", "accesstoken", "refreshtoken",
    "authtoken", "idtoken", "bearertoken", "apitoken", "cookie", "connectionstring", "connstring",
    "sharedaccesssignature", "cardnumber", "creditcard",
)
WORD_TERMS: tuple[str, ...] = (
    "pass", "pwd", "pw", "secret", "secrets", "token", "auth", "jwt", "ssn", "pin", "otp", "cvv", "cvc",
    "sid", "sessid", "sas", "sig", "psk",
)
SUFFIX_TERMS: tuple[str, ...] = ("secret", "token")

# Letters from other scripts that look like ASCII letters (a subset of Unicode TR39
# confusables.txt covering what spells key names: Cyrillic, Greek, Armenian, Cherokee,
# Latin small capitals and IPA).  NFKC already folds full-width and mathematical letters.
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ɡ": "g", "ь": "b", "п": "n",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "З": "3", "І": "I", "Ї": "I", "Ј": "J", "К": "K", "М": "M",
    "Н": "H", "О": "O", "Р": "P", "С": "C", "Ѕ": "S", "Т": "T", "У": "Y", "Х": "X", "Ԁ": "D", "Ԛ": "Q",
    "Ԝ": "W", "Ӏ": "I", "Ү": "Y", "Һ": "H",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "ι": "i", "κ": "k", "υ": "u", "ε": "e", "χ": "x",
    "ϲ": "c", "ϳ": "j", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Armenian, Cherokee, Latin extensions and IPA
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e",
    "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ı": "i", "ȷ": "j",
    "Ꭺ": "A", "Ᏼ": "B", "Ꮯ": "C", "Ꭼ": "E", "Ꮋ": "H", "Ꮶ": "K", "Ꮇ": "M", "Ꮲ": "P", "Ꮪ": "S", "Ꭲ": "T",
    "ℓ": "l", "∣": "l", "ǀ": "l",
})
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# a Kubernetes-style annotation or label key: a DNS-subdomain prefix, a slash, a name
_ANNOTATION_RE = re.compile(r"[a-z0-9](?:[a-z0-9.\-]{0,251}[a-z0-9])?/[A-Za-z0-9._\-]{1,63}")


def fold_key(key: str) -> str:
    """A key name as compared: NFKC, format characters (zero-width space/joiners, BOM, soft
    hyphen) and combining marks dropped, confusable letters mapped to ASCII.  Case kept
    (word splitting needs it); ``key_words`` lower-cases."""
    if key.isascii():
        return key
    text = unicodedata.normalize("NFKC", key)
    text = "".join(ch for ch in unicodedata.normalize("NFD", text)
                   if unicodedata.category(ch) not in ("Mn", "Me", "Cf"))
    return text.translate(_CONFUSABLES)


def key_words(key: str) -> list[str]:
    """The lower-case words of a (folded) key name.  A Kubernetes-style ``prefix/name`` key
    ("authorization.k8s.io/decision") is judged by its name part after the slash."""
    folded = fold_key(key)
    if "/" in folded and _ANNOTATION_RE.fullmatch(folded):
        folded = folded.rsplit("/", 1)[1]
    return [w.lower() for w in _WORD_RE.findall(folded)]


def _normalise_term(term: str) -> str:
    return "".join(key_words(term))


# --- value detectors ---------------------------------------------------------------------
# Patterns marked (gitleaks) follow the rule of that name in gitleaks' config/gitleaks.toml,
# (detect-secrets) the plugin of that name; all are written here, in our own code.

_B64 = r"A-Za-z0-9+/"
_ID = r"A-Za-z0-9_.\-"  # identifier characters of a key in free text (ASCII part)


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# (rule, pattern, group to replace: 0 the whole match, or a group name)
# A look-behind ("not after an identifier character") is written after the pattern's literal
# start, checking that literal again ("ghp_..." as gh(?<![A-Za-z0-9_]gh)...): the same
# matches, but the engine looks for the literal instead of trying the look-behind at every
# position (a pattern that starts with a look-behind or an optional part costs ~10 ms per MiB
# even where its trigger occurs once).
_VALUE_PATTERNS: dict[str, list[tuple[re.Pattern[str], int | str]]] = {
    # PEM private keys of every kind (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP ... BLOCK); a block
    # without its END line is redacted to the end of the string
    "private-key": [(_rx(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
                         r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)", re.DOTALL), 0)],
    # JWT / JWS / JWE: a base64url JSON header ("eyJ") and at least one more dotted part (gitleaks: jwt).
    # "eyJ" not after a base64url character, written literal first so that the engine looks
    # for "eyJ" rather than trying the look-behind at every position; possessive where the
    # next character ('.') is never one the part takes.
    "jwt": [(_rx(r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,3}"), 0)],
    # (gitleaks: github-pat, github-oauth, github-app-token, github-refresh-token, github-fine-grained-pat)
    "github-token": [(_rx(r"gh(?<![A-Za-z0-9_]gh)[pousr]_[A-Za-z0-9]{30,255}(?![A-Za-z0-9_])"), 0),
                     (_rx(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255}"), 0)],
    # (gitleaks: gitlab-pat, gitlab-ptt, gitlab-rrt, gitlab-deploy-token)
    "gitlab-token": [(_rx(r"gl(?<![A-Za-z0-9_]gl)(?:pat|ptt|rt|dt)-[A-Za-z0-9_\-]{20,}"), 0)],
    # (gitleaks: slack-bot-token, slack-user-token, slack-app-token, slack-legacy-*)
    "slack-token": [(_rx(r"xox(?<![A-Za-z0-9_]xox)[baprse]-[A-Za-z0-9\-]{10,}"), 0),
                    (_rx(r"xapp-(?<![A-Za-z0-9_]xapp-)[0-9]+-[A-Za-z0-9\-]{10,}"), 0)],
    # (gitleaks: slack-webhook-url; "(?i:h)" matches only "h" and "H")
    "slack-webhook": [(_rx(r"[hH](?i:ttps?)://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}"),
                       0)],
    # (gitleaks: stripe-access-token; whsec_ webhook signing secrets)
    "stripe-key": [(_rx(r"[sr]k_(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[A-Za-z0-9]{10,247}"), 0),
                   (_rx(r"whsec_(?<![A-Za-z0-9_]whsec_)[A-Za-z0-9+/=]{24,}"), 0)],
    # (gitleaks: gcp-api-key)
    "google-api-key": [(_rx(r"AIza[0-9A-Za-z_\-]{35}"), 0)],
    # Azure storage account keys inside connection strings (detect-secrets: AzureStorageKeyDetector)
    "azure-storage-key": [(_rx(rf"AccountKey=(?P<secret>[{_B64}]{{20,}}={{0,2}})"), "secret")],
    # Azure shared access signatures: the sig= parameter (the signature is the secret)
    "azure-sas-token": [(_rx(r"sig=(?<![A-Za-z0-9_.\-]sig=)(?P<secret>[A-Za-z0-9%+/=]{20,})"), "secret")],
    # (gitleaks: npm-access-token)
    "npm-token": [(_rx(r"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9])"), 0)],
    # (gitleaks: pypi-upload-token) the macaroon's fixed prefix "pypi-AgEIcHlwaS5vcmc" ("pypi-"
    # optional: (?:pypi-)?X written X' | X, the same preference)
    "pypi-token": [(_rx(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}|AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"), 0)],
    # (gitleaks: aws-access-token; detect-secrets: AWSKeyDetector)
    "aws-access-key-id": [(_rx(r"A(?<![A-Z0-9]A)(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[A-Z0-9]{16}(?![A-Z0-9])"),
                           0)],
    # aws-secret-access-key: see _redact_aws_secret (needs context in the same string)
    "aws-secret-access-key": [],
    # user:password@ in a URL or connection string (detect-secrets: BasicAuthDetector); the user is kept.
    # The scheme is [A-Za-z][A-Za-z0-9+.\-]*: the match is taken from the start of the run of
    # such characters (the digits, "+", "." and "-" before its first letter are kept as they
    # are), so each run is scanned once; from every letter of the run, as the plain pattern
    # would, costs its length squared (1 MiB of hex: minutes).  No part can give back what
    # it took and match otherwise (the next character is never one it takes): possessive.
    "url-credentials": [(_rx(r"(?<![A-Za-z0-9+.\-])[0-9+.\-]*+[A-Za-z][A-Za-z0-9+.\-]*+://"
                             r"[^/\\\"?#@:\x00-\x20]*+:(?P<secret>[^/\\\"?#@\x00-\x20]++)@"), "secret")],
    # (\b before "b": the character before is no \w)
    "bearer-credential": [(_rx(r"[bB](?<!\w[bB])(?i:earer|asic)\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)"), "secret")],
    # kv-secret and card-number: see _redact_kv and _redact_cards
    "kv-secret": [],
    "card-number": [],
}

# The literal trigger of each rule that has one, in decoded strings (the rule's pattern
# cannot match without it).  The other rules (aws-secret-access-key, kv-secret, custom
# patterns) check their own preconditions.  Every rule whose trigger occurs anywhere in the
# string runs, in two passes: first the rules whose trigger one scan of ``_RULE_TRIGGERS``
# finds (``finditer``, as 74e4d78 decided which rules run), then, on what they left, the
# rules whose trigger occurs only inside another trigger's match (between "://" and a later
# "@": "see https://x.example/docs then eyJ... ask me@x.example"; in a token prefix's match:
# "glpat-----BEGIN ...", "AKIAIza...").  The second pass only adds redactions: running those
# rules in the first pass could change what a later rule of it matches (a JWT redacted before
# the AWS rule splits a 40-character run that rule would redact).  ``_triggers_in`` computes
# both sets, fast.  Every alternative but the card one starts with one literal character
# ("(?i:b)" matches only "b" and "B"), and no two alternatives can start at the same position
# (their first characters differ, or their next ones do), so their order does not matter.
_TRIGGERED: dict[str, str] = {name: name.replace("-", "_") for name in (
    "private-key", "jwt", "github-token", "gitlab-token", "slack-token", "slack-webhook", "stripe-key",
    "google-api-key", "azure-storage-key", "azure-sas-token", "npm-token", "pypi-token", "aws-access-key-id",
    "url-credentials", "bearer-credential", "card-number")}
_TRIGGER_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("private-key", ("-----BEGIN",)), ("jwt", ("eyJ",)), ("github-token", ("gh[pousr]_", "github_pat_")),
    ("gitlab-token", ("gl(?:pat|ptt|rt|dt)-",)), ("slack-token", ("xox[baprse]-", "xapp-")),
    ("slack-webhook", (r"hooks\.slack\.com/",)), ("stripe-key", ("sk_(?:live|test)_", "rk_(?:live|test)_", "whsec_")),
    ("google-api-key", ("AIza",)), ("azure-storage-key", ("AccountKey=",)), ("azure-sas-token", ("sig=",)),
    ("npm-token", ("npm_",)), ("pypi-token", ("AgEIcHlwaS5vcmc",)),
    ("aws-access-key-id", ("A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)",)), ("url-credentials", ("://[^@]*@",)),
    ("bearer-credential", ("b(?i:earer|asic)", "B(?i:earer|asic)")), ("card-number", (r"\d(?:[ .\-_/]?\d){12}",)))
# The definition of the first pass (``_triggers_in`` computes the same, faster; tests compare):
# one group per rule, after its alternatives (an alternative that starts with a literal lets
# the engine skip it at a glance).
_RULE_TRIGGERS = re.compile("|".join(f"(?:{'|'.join(alts)})(?P<{_TRIGGERED[name]}>)"
                                     for name, alts in _TRIGGER_PATTERNS))
# Where each literal trigger (all but the card and url-credentials ones) starts, also inside
# another's match: one alternative per first character, the rest of each trigger starting
# with it a group in a look-ahead, which ends where the trigger's match would (``lastindex``
# names the trigger).  Every alternative starts with a literal character, so the engine only
# tries them where one of those characters is (one look-ahead there: as fast as the plain
# alternation).
_LITERAL_ALTERNATIVES: tuple[tuple[str, str], ...] = tuple(
    (_TRIGGERED[name], alt) for name, alts in _TRIGGER_PATTERNS if name not in ("card-number", "url-credentials")
    for alt in alts)
_LITERAL_FIRSTS: tuple[str, ...] = tuple(dict.fromkeys(alt[0] for _, alt in _LITERAL_ALTERNATIVES))
_LITERAL_STARTS = re.compile("|".join(
    f"{first}(?=(?:{'|'.join(f'({alt[1:]})' for _, alt in _LITERAL_ALTERNATIVES if alt[0] == first)}))"
    for first in _LITERAL_FIRSTS))
_LITERAL_START_GROUP: tuple[str, ...] = ("", *(group for first in _LITERAL_FIRSTS
                                               for group, alt in _LITERAL_ALTERNATIVES if alt[0] == first))
_CARD_TRIGGER = re.compile(dict(_TRIGGER_PATTERNS)["card-number"][0])
# Digits and card separators as "0", every other character as "x", in a bytes copy of a
# string (one byte per character: Latin-1, anything else as "?"): a card shape (13 or more
# digits with single separators) can only lie in a run of such "0"s, which bytes.find finds
# at C speed; the regular expression then runs on those runs only.  In Latin-1 only 0-9 are
# digits, also for a str pattern's \d; where a digit of another script could count (\d, not
# re.ASCII, and the text holds one), every "?" is taken as a possible digit too (a run
# longer than the truth only costs a longer search).
_RUN_BYTES = bytes(0x30 if b in b"0123456789 .-_/" else 0x78 for b in range(256))
_RUN_BYTES_OTHER_DIGITS = bytes(0x30 if b in b"0123456789 .-_/?" else 0x78 for b in range(256))
_NON_ASCII_DIGIT = re.compile(r"[^\x00-\x7f\D]")


def _digit_runs(text: str, unicode_digits: bool) -> bytes:
    """``text`` mapped through ``_RUN_BYTES``, one byte per character (what is not Latin-1
    as "?").  ``unicode_digits``: for a pattern whose \\d is Unicode's."""
    if text.isascii():
        return text.encode("ascii").translate(_RUN_BYTES)
    table = _RUN_BYTES_OTHER_DIGITS if unicode_digits and _NON_ASCII_DIGIT.search(text) else _RUN_BYTES
    return text.encode("latin-1", "replace").translate(table)


def _in_runs(rx: re.Pattern[str], text: str, runs: bytes, pos: int, shortest: int) -> Iterator[re.Match[str]]:
    """``rx.finditer(text, pos)`` for a pattern whose matches consist of digits and card
    separators only, at least ``shortest`` of them, and that looks at most one character
    around a match (a digit or not): the same matches, searched for only in the runs of
    ``runs`` (``_digit_runs``) of that length."""
    window = b"0" * shortest
    while (start := runs.find(window, pos)) >= 0:
        end = runs.find(b"x", start + shortest)
        if end < 0:
            end = len(runs)
        # from ``start`` (a run's first character, or ``pos``) to the end of the run: the
        # characters on either side are no digits, as the end of the string would be
        yield from rx.finditer(text, start, end)
        pos = end


def _triggers_in(text: str) -> tuple[set[str], set[str]]:
    """The rules (their groups in ``_RULE_TRIGGERS``) that run on ``text``, as ``(first,
    then)``: ``first`` is exactly ``{m.lastgroup for m in _RULE_TRIGGERS.finditer(text)}``
    (what 74e4d78 ran), ``then`` every other rule whose trigger occurs in ``text`` (inside
    another trigger's match, where that scan did not look: between "://" and a later "@", a
    "-----BEGIN" after "glpat-" or an "AccountKey=" after "AKI").

    Three streams merged in order: where each literal trigger starts (``_LITERAL_STARTS``,
    every one), the card trigger (``_in_runs``) and url-credentials' ("://" with an "@" after
    it: ``str.find``).  A match that starts where the scan is (not inside the last match it
    took) is one the scan takes, and it goes on from its end; the card and url-credentials
    streams search again from there, and a literal start inside it is one the scan did not
    see.  (74e4d78 ran the one scan, trying every alternative at every position, and each
    "://" to the end of the string when no "@" followed: ~4 MB/s, and minutes for 1 MiB of
    "://"; this: 40-80 MB/s on hex, base64 or prose.)"""
    first: set[str] = set()
    hidden: set[str] = set()
    none = len(text) + 1
    runs = _digit_runs(text, True)
    last_at = text.rfind("@")  # "://" matches where it ends at or before the last "@"
    url = text.find("://", 0, last_at) if last_at >= 0 else -1
    cards = _in_runs(_CARD_TRIGGER, text, runs, 0, 13)
    card = next(cards, None)
    every = {name for name, found in (("card_number", card), ("url_credentials", url >= 0)) if found}
    pos = 0  # where the one scan is

    def others(before: int) -> int:
        """Take the card and url-credentials matches that start before ``before`` (no two
        streams start at one position: a digit, "://", a letter or "-"); the next one's start."""
        nonlocal card, cards, url, pos
        while True:
            if card is not None and (url < 0 or card.start() < url):
                if card.start() >= before:
                    return card.start()
                if card.start() < pos:  # inside a literal trigger's match (none today)
                    cards = _in_runs(_CARD_TRIGGER, text, runs, pos, 13)
                    card = next(cards, None)
                    continue
                first.add("card_number")
                pos = card.end()
                card = next(cards, None)  # (finditer goes on from ``pos``)
            elif url >= 0:
                if url >= before:
                    return url
                if url < pos:  # inside a literal trigger's match (none today)
                    url = text.find("://", pos, last_at)
                    continue
                first.add("url_credentials")
                pos = text.index("@", url + 3) + 1
                url = text.find("://", pos, last_at)
                if card is not None and card.start() < pos:
                    cards = _in_runs(_CARD_TRIGGER, text, runs, pos, 13)
                    card = next(cards, None)
            else:
                return none

    group, take, skip = _LITERAL_START_GROUP, first.add, hidden.add
    other = others(0)
    for m in _LITERAL_STARTS.finditer(text):
        i = m.lastindex or 0
        start, end = m.span(i)  # the look-ahead's: from the trigger's second character to its end
        if other < start:
            other = others(start)
        if start > pos:
            take(group[i])
            pos = end
        else:
            skip(group[i])
    others(none)
    return first, (every | hidden) - first


# AWS secret access keys have no prefix: 40 base64 characters, accepted only with context in
# the same string (an AWS key id, or "aws" written anywhere in it) and with both letter cases,
# which rules out hex digests (detect-secrets: AWSKeyDetector does the same with context).
# Their candidates are exactly the runs of base64 characters 40 long (no base64 character on
# either side); they are found as runs of "0" in a bytes copy of the text (_B64_RUN_BYTES, one
# byte per character) rather than by trying the look-behind at every position.
_AWS_SECRET_RE = re.compile(rf"(?<![{_B64}])[{_B64}]{{40}}(?![{_B64}])")  # what _redact_aws_secret finds
_B64_RUN_BYTES = bytes(0x30 if chr(b) in string.ascii_letters + string.digits + "+/" else 0x78 for b in range(256))
_AWS_RUN = b"x" + b"0" * 40 + b"x"
# (each alternative starts with a literal, "(?i:a)" matching only "a" and "A": the engine
# tries them only there)
_AWS_CONTEXT_RE = re.compile(r"a(?i:ws)|A(?i:ws)|A(?:KIA|SIA)[A-Z0-9]{16}")

# key=value and key: value in free text: a secret-looking key (judged like a field name),
# optionally quoted, not itself after a ':', '=', '/' or '@' ("system:serviceaccount:auth:x"
# and paths are not key-value text), then the value (an auth scheme and its token, a quoted string, or up
# to the next space, quote, & ; , < > or backslash).  Only spaces around the separator:
# a tab or newline is escaped in the serialised bytes, where the screen could not see it.
# The key is possessive: no key character can be the quote, space, ':' or '=' after it.
_KV_RE = re.compile(
    rf"(?<![{_ID}\u0080-\U0010ffff:=/@])(?P<q>[\"']?)(?P<key>[{_ID}\u0080-\U0010ffff]++)(?P=q) *[:=] *"
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


# --- the screen ----------------------------------------------------------------------------
# Flags as in pipeline/_native.c (same values).
SCREEN_NULL = 1
SCREEN_HINT = 2
SCREEN_DIGITS = 4
SCREEN_FLAT = 8
SCREEN_SHIFT = 8
# settings flags for the screen
SCREEN_KV_ANY = 1  # custom key patterns: any key=value shape is a hint
SCREEN_OPAQUE = 2  # custom value patterns: every event is a hint (they cannot be screened)

_TRIGGERS = re.compile(
    rb"-----BEGIN|A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA|Iza|gEIcHlwaS5vcmc|ccountKey)|eyJ|gh[pousr]_|github_pat_"
    rb"|gl(?:pat|ptt|rt|dt)-|xox[baprse]-|xapp-|[sr]k_(?:live|test)_|whsec_|npm_|[\x80-\xff]"
    rb"|://[^/\"\\?#@\x00-\x20]*@|://hooks\.slack\.com/|(?i:b(?:asic|earer))")
_AWS_WORD = re.compile(rb"(?i:aws)")
_B64_RUN = re.compile(rb"[A-Za-z0-9+/]{40}")
_KV_ANCHOR = re.compile(rb"[:=]")
_DIGIT_CLASS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2D if b in b" -._/" else 0x78 for b in range(256))
_THIRTEEN_DIGITS = b"0" * 13
_IDENT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KV_MAX_KEY = 64


def _kv_hint(out: bytes, i: int, stems: tuple[bytes, ...], kv_any: bool) -> bool:
    """At a ':' or '=' of the serialised bytes: is the identifier before it (spaces, then
    quotes and backslashes skipped) secret-looking?  A ':' right after a string's closing
    quote is orjson's key separator (keys are judged through the key-set verdicts)."""
    if out[i] == 0x3A and i >= 1 and out[i - 1] == 0x22 and not (i >= 2 and out[i - 2] == 0x5C):
        return False
    j = i
    while j > 0 and out[j - 1] == 0x20:
        j -= 1
    while j > 0 and out[j - 1] in (0x22, 0x27, 0x5C):
        j -= 1
    end = j
    while j > 0 and out[j - 1] in _IDENT:
        j -= 1
        if end - j > _KV_MAX_KEY:
            return True
    if j == end:
        return False
    if j > 0 and out[j - 1] in b":=/@":
        return False  # "a:b:c", "x=y=z", paths and user@host: not a key of its own
    if kv_any:
        return True
    word = bytes(c | 0x20 for c in out[j:end] if c not in b"_.-")
    return any(s in word for s in stems)


def _stem_table(stems: Iterable[str]) -> bytes:
    """The stems as the C screen reads them: a bitmap of the byte pairs stems start with
    (65536 bits; a one-byte stem marks every pair), then each stem as a length byte and
    its bytes (see stem_in in _native.c)."""
    bits = bytearray(8192)
    body = b""
    for stem in stems:
        raw = stem.encode()[:255]
        seconds = [raw[1]] if len(raw) > 1 else range(256)
        for second in seconds:
            pair = raw[0] << 8 | second
            bits[pair >> 3] |= 1 << (pair & 7)
        body += bytes([len(raw)]) + raw
    return bytes(bits) + body


def _screen_python(out: bytes, stems: tuple[bytes, ...] = (), flags: int = 0) -> int:
    """The pure-Python screen: exactly the flags ``_native.screen`` computes."""
    r = 0
    if b"null" in out:
        r |= SCREEN_NULL
    if (flags & SCREEN_OPAQUE or _TRIGGERS.search(out) is not None
            or (_AWS_WORD.search(out) is not None and _B64_RUN.search(out) is not None)
            or any(_kv_hint(out, m.start(), stems, bool(flags & SCREEN_KV_ANY)) for m in _KV_ANCHOR.finditer(out))):
        r |= SCREEN_HINT
    if _THIRTEEN_DIGITS in out.translate(_DIGIT_CLASS).replace(b"-", b""):
        r |= SCREEN_DIGITS
    braces, brackets = out.count(b"{"), out.count(b"[")
    if braces == 1 and brackets == 0:
        r |= SCREEN_FLAT
    return ((braces + brackets) << SCREEN_SHIFT) | r


def _card_in(out: bytes) -> bool:
    """Whether the serialised bytes hold a card-number shape with a valid Luhn digit, also
    as a float ("4111111111111111.0").  A superset of what the card rule redacts.  (C:
    ``_native.card_in``, tested equal.)"""
    runs = out.translate(_RUN_BYTES)
    pos = 0
    while (start := runs.find(b"0" * 12, pos)) >= 0:  # as in _in_runs: a match holds 12 digits or more
        pos = runs.find(b"x", start + 12)
        if pos < 0:
            pos = len(runs)
        for m in _CARD_RE_BYTES.finditer(out, start, pos):  # ASCII only: the same matches as on the decoded text
            text = m.group(0).decode()
            if _is_card(text) or (text.endswith(".0") and _is_card(text[:-2])):
                return True
    return False


_card_check: Callable[[bytes], bool] = _native.card_in if _native is not None else _card_in


# --- errors --------------------------------------------------------------------------------

class InvalidEvent(PipelineError, ValueError):
    """The event was refused; nothing was written.  ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"invalid event ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.index: int | None = None  # position in a batch, when raised for one

    def diagnostics(self) -> str:
        return f"The event was not written: {self.detail}. Fix the event and send it again."


class RuleError(PipelineError, ValueError):
    """A redaction rule set is invalid.  ``problems`` names each problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# --- rules -----------------------------------------------------------------------------------

_RULE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9\-]{0,62}")


@dataclass(frozen=True)
class Rules:
    """The configurable part of redaction (``[sanitise]`` in pipeline.toml).

    ``extra_keys``: key names treated as secret, compared like the built-in terms (folded,
    any separators and case: "patient_mrn" also matches "PatientMRN", "patient-mrn-2").
    ``key_patterns``: regular expressions searched in the folded, lower-cased key name.
    ``value_patterns``: rule name -> regular expression redacted in every string (only its
    group named ``secret`` when it has one).  ``keep``: key names whose fields are never
    touched (neither the name nor anything under it).  ``disable``: built-in rules turned
    off.  ``marker``: the replacement, ``{rule}`` standing for the rule's name."""

    extra_keys: tuple[str, ...] = ()
    key_patterns: tuple[str, ...] = ()
    value_patterns: tuple[tuple[str, str], ...] = ()
    keep: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    marker: str = DEFAULT_MARKER

    def problems(self) -> list[str]:
        """Every problem with these rules, each naming the setting (empty: valid)."""
        out: list[str] = []
        for k in self.extra_keys:
            if not _normalise_term(k):
                out.append(f"extra_keys: {k!r} has no letters or digits to match")
            elif len(_normalise_term(k)) > 64:
                out.append(f"extra_keys: {k!r} is longer than 64 letters and digits")
        for p in self.key_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                out.append(f"key_patterns: {p!r} is not a valid regular expression ({exc})")
        for name, p in self.value_patterns:
            if not _RULE_NAME_RE.fullmatch(name):
                out.append(f"value_patterns: rule name {name!r} must be lower-case letters, digits and hyphens")
            elif name in BUILTIN_RULES:
                out.append(f"value_patterns: rule name {name!r} is a built-in rule; choose another name")
            try:
                rx = re.compile(p)
            except re.error as exc:
                out.append(f"value_patterns.{name}: {p!r} is not a valid regular expression ({exc})")
                continue
            if rx.search("") is not None:
                out.append(f"value_patterns.{name}: {p!r} matches the empty string")
        unknown = [d for d in self.disable if d not in BUILTIN_RULES]
        if unknown:
            out.append(f"disable: unknown rule(s) {', '.join(map(repr, unknown))}; "
                       f"the built-in rules are {', '.join(BUILTIN_RULES)}")
        if self.marker.count("{rule}") != 1 or self.marker.replace("{rule}", "").count("{") \
                or self.marker.replace("{rule}", "").count("}"):
            out.append(f"marker: {self.marker!r} must contain {{rule}} exactly once and no other braces")
        elif not out:
            # a marker that a rule would redact again would not be stable (and could hide
            # which rule fired): check it against every rule
            names = [*BUILTIN_RULES, *(n for n, _ in self.value_patterns)]
            compiled = _Compiled.build(self, secret_keys=None, redact=True, redact_values=True, check=False)
            for name in names:
                text = self.marker.format(rule=name)
                if compiled.redact_text(text, None) != text:
                    out.append(f"marker: {self.marker!r} would itself be redacted (for rule {name!r})")
                    break
        return out


class RedactionCounts:
    """Redactions per rule since the process started (kept across ``reconfigure``);
    exported as ``worm_redactions_total{rule}`` by pipeline.ops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for rule, n in counts.items():
                self._counts[rule] = self._counts.get(rule, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


_ValueRule = Callable[[str, dict[str, int] | None], str]

# The key verdicts are cached (``key_cache``, ``key_verdicts``: 65,536 keys each) only for a
# key of at most _CACHED_KEY_LEN characters: a longer key (a 500 KB "xxxx...=v" in free text,
# or a JSON key of that size) is judged again each time it comes (linear in its length like
# every rule: ~7 ms for 512 KiB, 7 us for 300 characters) and its event takes the Python path.
# ``keyset_cache`` (4,096 key sets) holds only key sets of such keys, and at most
# _KEYSET_CACHE_BUDGET in all, counting a key set as its characters plus _KEYSET_KEY_COST
# per key (about its bytes for ASCII keys: the string object and the tuple's pointer); it is
# cleared when a key set would take it over, and a key set of more than a sixteenth of it
# (~6,000 short keys) is not cached.  Unbounded, each entry held its keys: 65,536 keys of up
# to 8 MiB, tens of GiB.  Bounded, every entry of every cache at its limit with distinct keys
# (tracemalloc): ASCII 21 + 21 + 8 MiB, 4-byte characters 71 + 71 + 27 MiB.  Real key names
# are far shorter (the realistic workload: at most 17 characters, 15 keys and 200 characters
# a key set), and the text cache keeps strings of at most 256 characters too.
_CACHED_KEY_LEN = 256
_KEYSET_KEY_COST = 64
_KEYSET_CACHE_BUDGET = 8 << 20


def _keyset_cost(keys: tuple[str, ...]) -> int:
    """What caching a key set counts against _KEYSET_CACHE_BUDGET, or -1: not cached."""
    if any(len(k) > _CACHED_KEY_LEN for k in keys):
        return -1
    cost = sum(map(len, keys)) + _KEYSET_KEY_COST * len(keys)
    return cost if cost <= _KEYSET_CACHE_BUDGET // 16 else -1


@dataclass(frozen=True, eq=False)
class _Compiled:
    """Everything derived from one rule set; replaced as a whole by ``reconfigure``."""

    rules: Rules
    redact: bool
    redact_values: bool
    substring_terms: tuple[str, ...]
    word_terms: frozenset[str]
    suffix_terms: tuple[str, ...]
    key_res: tuple[re.Pattern[str], ...]
    key_rule_on: bool
    value_rules: tuple[tuple[str, _ValueRule], ...]
    untriggered_rules: tuple[_ValueRule, ...]
    keep: frozenset[str]
    markers: dict[str, str]
    marker_re: re.Pattern[str]
    stems: tuple[bytes, ...]
    screen_flags: int
    stems_table: bytes
    key_cache: dict[str, bool] = field(default_factory=dict)
    keyset_cache: dict[tuple[str, ...], bool] = field(default_factory=dict)
    key_verdicts: dict[str, bool] = field(default_factory=dict)  # per key, for nested events
    text_cache: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = field(default_factory=dict)
    last_clean: list[tuple[str, ...] | None] = field(default_factory=lambda: [None])
    keyset_cache_cost: list[int] = field(default_factory=lambda: [0])  # see _KEYSET_CACHE_BUDGET

    @classmethod
    def build(cls, rules: Rules, *, secret_keys: Iterable[str] | None, redact: bool,
              redact_values: bool, check: bool = True) -> _Compiled:
        problems = rules.problems() if check and rules != Rules() else []
        if problems:
            raise RuleError(problems)
        disabled = set(rules.disable)
        if secret_keys is None:
            substring, words, suffix = list(SUBSTRING_TERMS), set(WORD_TERMS), list(SUFFIX_TERMS)
        else:  # an explicit list replaces the built-in terms (each matched as a word run)
            substring, words, suffix = [], {_normalise_term(k) for k in secret_keys} - {""}, []
        words |= {_normalise_term(k) for k in rules.extra_keys} - {""}
        markers = {name: rules.marker.format(rule=name)
                   for name in (*BUILTIN_RULES, *(n for n, _ in rules.value_patterns))}
        pre, post = rules.marker.split("{rule}")
        marker_re = re.compile(re.escape(pre) + r"[a-z0-9\-]+" + re.escape(post))
        # the screen's key stems: every term the key rule can match is a substring of a
        # key's joined words, so a key holding none of these stems cannot be secret.  The
        # built-in terms are always screened for (azure-sas-token's "sig=" needs it).
        terms = set(SUBSTRING_TERMS) | set(WORD_TERMS) | set(SUFFIX_TERMS) | set(substring) | words | set(suffix)
        stems = sorted(t for t in terms if not any(o != t and o in t for o in terms))
        flags = (SCREEN_KV_ANY if rules.key_patterns else 0) | (SCREEN_OPAQUE if rules.value_patterns else 0)
        compiled = cls(
            rules=rules, redact=redact, redact_values=redact_values, substring_terms=tuple(substring),
            word_terms=frozenset(words), suffix_terms=tuple(suffix),
            key_res=tuple(re.compile(p) for p in rules.key_patterns), key_rule_on=KEY_RULE not in disabled,
            value_rules=(), untriggered_rules=(), keep=frozenset(rules.keep), markers=markers, marker_re=marker_re,
            stems=tuple(s.encode() for s in stems), screen_flags=flags,
            stems_table=_stem_table(stems))
        value_rules: list[tuple[str, _ValueRule]] = []
        for name in VALUE_RULES:
            if name in disabled:
                continue
            if name == "aws-secret-access-key":
                value_rules.append((name, compiled._redact_aws_secret))
            elif name == "kv-secret":
                value_rules.append((name, compiled._redact_kv))
            elif name == "card-number":
                value_rules.append((name, compiled._redact_cards))
            else:
                value_rules.append((name, partial(compiled._redact_patterns, name, _VALUE_PATTERNS[name])))
        for name, pattern in rules.value_patterns:
            rx = re.compile(pattern)
            group: int | str = "secret" if "secret" in rx.groupindex else 0
            value_rules.append((name, partial(compiled._redact_patterns, name, [(rx, group)])))
        object.__setattr__(compiled, "value_rules", tuple(value_rules))
        object.__setattr__(compiled, "untriggered_rules",
                           tuple(rule for name, rule in value_rules if name not in _TRIGGERED))
        return compiled

    # -- keys ---------------------------------------------------------------------------------

    def is_secret_key(self, key: str) -> bool:
        if len(key) > _CACHED_KEY_LEN:
            return self._judge_key(key)  # not cached (see _CACHED_KEY_LEN)
        hit = self.key_cache.get(key)
        if hit is None:
            hit = self._judge_key(key)
            if len(self.key_cache) >= 65536:
                self.key_cache.clear()
            self.key_cache[key] = hit
        return hit

    def _judge_key(self, key: str) -> bool:
        # a marker left by an earlier pass (a secret used as a key) is not a key name
        # ("[REDACTED:github-token]" holds the word "token"): judge what is around it
        key = self.marker_re.sub(" ", key)
        words = key_words(key)
        joined = "".join(words)
        if any(t in joined for t in self.substring_terms):
            return True
        if any(w.endswith(t) for w in words for t in self.suffix_terms):
            return True
        n = len(words)
        for i in range(n):
            run = ""
            for j in range(i, min(n, i + 4)):
                run += words[j]
                if run in self.word_terms:
                    return True
        if self.key_res:
            folded = fold_key(key).lower()
            return any(rx.search(folded) is not None for rx in self.key_res)
        return False

    # -- values -----------------------------------------------------------------------------------

    def redact_text(self, text: str, counts: dict[str, int] | None) -> str:
        """``text`` with every secret-looking part replaced by its rule's marker.  Short
        strings are remembered with their result (events repeat most of their values)."""
        if len(text) > 256:
            return self._redact_text(text, counts)
        hit = self.text_cache.get(text)
        if hit is None:
            fired: dict[str, int] = {}
            hit = (self._redact_text(text, fired), tuple(fired.items()))
            if len(self.text_cache) >= 16384:
                self.text_cache.clear()
            self.text_cache[text] = hit
        if counts is not None:
            for rule, n in hit[1]:
                counts[rule] = counts.get(rule, 0) + n
        return hit[0]

    def _redact_text(self, text: str, counts: dict[str, int] | None) -> str:
        """A rule with a literal trigger (_TRIGGER_PATTERNS) runs only when the trigger
        occurs: first the rules whose trigger one scan finds, then, on their result, those
        whose trigger occurs only inside another trigger's match (see _triggers_in)."""
        first, then = _triggers_in(text)
        if not first:  # the common case: only the rules without a literal trigger
            for rule in self.untriggered_rules:
                text = rule(text, counts)
            return text
        for name, rule in self.value_rules:
            if name in _TRIGGERED and _TRIGGERED[name] not in first:
                continue
            text = rule(text, counts)
        if then:  # only adds redactions to what the first pass left
            for name, rule in self.value_rules:
                if name in _TRIGGERED and _TRIGGERED[name] in then:
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
        # _AWS_SECRET_RE.sub: each run of exactly 40 base64 characters, "x" + 40 "0" + "x" in
        # the bytes copy with an "x" added at either end (its index is the run's in ``text``)
        runs = b"x" + text.encode("latin-1", "replace").translate(_B64_RUN_BYTES) + b"x"
        parts: list[str] = []
        last = pos = 0
        while (start := runs.find(_AWS_RUN, pos)) >= 0:
            pos = start + 40
            s = text[start:pos]
            if any(c.isupper() for c in s) and any(c.islower() for c in s):
                parts += (text[last:start], self._mark("aws-secret-access-key", counts))
                last = pos
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

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
        # _CARD_RE.sub, searching only the runs of 12 or more digits and separators
        parts: list[str] = []
        last = 0
        for m in _in_runs(_CARD_RE, text, _digit_runs(text, False), 0, 12):
            if _is_card(m.group(0)):
                parts += (text[last:m.start()], self._mark("card-number", counts))
                last = m.end()
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def card_number(self, value: int | float) -> bool:
        """Whether a JSON number is a card number (an integer, or a float with an integral
        value as orjson writes it, "4111111111111111.0")."""
        if "card-number" in self.rules.disable:
            return False
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer() and abs(value) >= 1e12):
                return False
            text = orjson.dumps(abs(value)).decode()
            return text.endswith(".0") and _CARD_RE.fullmatch(text[:-2]) is not None and _is_card(text[:-2])
        text = str(abs(value))  # a sign does not make a card number harmless
        return abs(value) >= 10**12 and _CARD_RE.fullmatch(text) is not None and _is_card(text)

    @property
    def fast_state(self) -> tuple[Any, ...]:
        return (self.redact, self.redact_values, self.keyset_cache, self.last_clean, self.stems_table,
                self.screen_flags, self.key_verdicts)


_ORJSON_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_OPTION_KWNAMES = ("option",)


class _Shared:
    """The rules of a sanitiser and its views (``with_max_event_bytes``)."""

    __slots__ = ("box", "c", "counts", "secret_keys")

    def __init__(self, c: _Compiled, secret_keys: tuple[str, ...] | None, counts: RedactionCounts) -> None:
        self.c = c
        self.secret_keys = secret_keys
        self.counts = counts
        self.box: list[tuple[Any, ...]] = [c.fast_state]


class Sanitiser:
    """Validation limits and redaction rules.  ``redact=False`` turns redaction off entirely;
    ``redact_values=False`` keeps only the key-name rule.  ``secret_keys`` replaces the
    built-in key terms (each then matched as a word run); ``rules`` is the configurable part
    (``Rules``).  The limits are fixed; the rules can be replaced live with ``reconfigure``."""

    def __init__(self, secret_keys: Iterable[str] | None = None, redact: bool = True, redact_values: bool = True,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
                 rules: Rules | None = None, counts: RedactionCounts | None = None) -> None:
        if not 1 <= max_depth <= strictjson.MAX_DEPTH:  # deeper records would not verify
            raise ValueError(f"max_depth must be 1..{strictjson.MAX_DEPTH}, got {max_depth}")
        secret = tuple(secret_keys) if secret_keys is not None else None
        compiled = _Compiled.build(rules or Rules(), secret_keys=secret, redact=redact, redact_values=redact_values)
        self._init(_Shared(compiled, secret, counts or RedactionCounts()), max_event_bytes, max_depth)

    def _init(self, shared: _Shared, max_event_bytes: int, max_depth: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_depth = max_depth
        self._shared = shared
        self.counts = shared.counts
        # The C accelerator reads the rule-dependent state from the shared one-item list on
        # every call, so ``reconfigure`` swaps it for every path at once.
        settings = (orjson.dumps, _OPTION_KWNAMES, _ORJSON_OPTS, self.max_event_bytes, self.max_depth, shared.box)
        self.fast_prepare: Callable[[Any], bytes | None] | None = (
            partial(_native.prepare_fast, *settings) if _native is not None else None)

    def with_max_event_bytes(self, max_event_bytes: int) -> Sanitiser:
        """This sanitiser with another size limit (ingest's ``max_event_bytes``), sharing the
        rules, their live replacement and the counts: the same sanitiser in every other way."""
        if max_event_bytes == self.max_event_bytes:
            return self
        view = Sanitiser.__new__(Sanitiser)
        view._init(self._shared, max_event_bytes, self.max_depth)
        return view

    @property
    def _c(self) -> _Compiled:
        return self._shared.c

    @property
    def rules(self) -> Rules:
        return self._c.rules

    @property
    def redact(self) -> bool:
        return self._c.redact

    @property
    def redact_values(self) -> bool:
        return self._c.redact_values

    def reconfigure(self, rules: Rules, *, redact: bool | None = None) -> None:
        """Replace the rules (SIGHUP), for this sanitiser and every view of it.  Raises
        RuleError and keeps the old rules when the new ones are invalid.  Counts carry over."""
        shared = self._shared
        c = shared.c
        new = _Compiled.build(rules, secret_keys=shared.secret_keys, redact=c.redact if redact is None else redact,
                              redact_values=c.redact_values)
        shared.c = new
        shared.box[0] = new.fast_state

    def is_secret_key(self, key: str) -> bool:
        """Whether a field name looks secret (see SUBSTRING_TERMS), cached per name."""
        return self._c.is_secret_key(key)

    def redact_text(self, text: str) -> str:
        """One string with every value rule applied (counted)."""
        counts: dict[str, int] = {}
        out = self._c.redact_text(text, counts)
        if counts:
            self.counts.add(counts)
        return out

    # -- public ---------------------------------------------------------------------------

    def prepare(self, event: Any) -> bytes:
        """Return the compact JSON bytes to store for ``event``, or raise InvalidEvent."""
        if self.fast_prepare is not None:
            # the common case (a flat, clean event with a known key set) in one C call; None
            # means "decide below", where every rule is applied exactly
            fast = self.fast_prepare(event)
            if type(fast) is bytes:
                return fast
        return self._prepare(self._c, event, None)

    def explain(self, event: Any) -> tuple[bytes, dict[str, int]]:
        """``prepare`` without counting, also returning what fired: {rule: count}.  For
        ``pipeline sanitise --check``."""
        found: dict[str, int] = {}
        return self._prepare(self._c, event, found), found

    def _prepare(self, c: _Compiled, event: Any, found: dict[str, int] | None) -> bytes:
        if not isinstance(event, dict):
            raise InvalidEvent("not-an-object", f"an event must be a JSON object, got {type(event).__name__}")
        try:
            out = orjson.dumps(event, option=_ORJSON_OPTS)
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(*_classify_encode_error(exc)) from None
        except RecursionError:
            raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels") from None
        if len(out) > self.max_event_bytes:
            raise InvalidEvent(
                "too-large", f"event is {len(out)} bytes serialised, over the limit of {self.max_event_bytes}"
            )
        # orjson writes NaN/Infinity as null: look for them only when a null is present.
        # Nesting cannot exceed the number of opening brackets, so count those first.
        screened = (_native.screen(out, c.stems_table, c.screen_flags) if _native is not None
                    else _screen_python(out, c.stems, c.screen_flags))
        if screened & SCREEN_NULL or screened >> SCREEN_SHIFT > self.max_depth:
            self._check_structure(event)
        if c.redact and self._needs_redaction(c, event, out, screened):
            counts: dict[str, int] = {}
            cleaned, changed = self._redact(c, event, counts)
            if changed:
                out = orjson.dumps(cleaned, option=_ORJSON_OPTS)
            if found is not None:
                found.update(counts)
            elif counts:
                self.counts.add(counts)
        return out

    def prepare_json(self, raw: bytes | str) -> bytes:
        """Validate one NDJSON line (bytes from a socket or stdin) and prepare it."""
        return self.prepare(self._parse_json(raw))

    def _parse_json(self, raw: bytes | str) -> Any:
        if isinstance(raw, str):
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidEvent("bad-utf8", f"lone surrogate in input: {exc.reason}") from None
        if len(raw) > self.max_event_bytes * 2:
            raise InvalidEvent("too-large", f"line is {len(raw)} bytes, over the limit")
        try:
            return strictjson.loads(raw)  # the log's JSON profile: docs/FORMAT.md §1.1
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("bad-json", str(exc)) from None
        except strictjson.ProfileError as exc:
            raise InvalidEvent(exc.reason, exc.detail) from None

    def explain_json(self, raw: bytes | str) -> tuple[bytes, dict[str, int]]:
        """``explain`` for one NDJSON line."""
        return self.explain(self._parse_json(raw))

    def prepare_json_many(self, raws: list[bytes]) -> list[bytes | InvalidEvent]:
        """``prepare_json`` for each line: its prepared bytes, or the InvalidEvent it raised.
        With the C accelerator the common case is one call for the whole batch."""
        fast = self._fast_many(raws, strictjson.fast_loads)
        out: list[bytes | InvalidEvent] = []
        for raw, done in zip(raws, fast, strict=True):
            if done is None:
                try:
                    done = self.prepare_json(raw)
                except InvalidEvent as exc:
                    out.append(exc)
                    continue
            out.append(done)
        return out

    def prepare_events_many(self, events: list[Any]) -> list[bytes | InvalidEvent]:
        """``prepare`` for each event object: its prepared bytes, or the InvalidEvent it
        raised (``prepare_json_many`` for events built in memory, e.g. by a decoder, that
        would otherwise be serialised only to be parsed again).  Every rule of ``prepare``
        applies; what ``prepare_json`` adds is about JSON text (its size before parsing, and
        the profile's rules on what parsing cannot show: duplicate keys, integer range, lone
        surrogates), which a dict of Python values shows or breaks itself: keys are unique,
        and an integer orjson cannot write or a lone surrogate makes ``prepare`` refuse."""
        fast = self._fast_many(events, None)
        out: list[bytes | InvalidEvent] = []
        for event, done in zip(events, fast, strict=True):
            if done is None:
                try:
                    done = self.prepare(event)
                except InvalidEvent as exc:
                    out.append(exc)
                    continue
            out.append(done)
        return out

    def prepare_many(self, events: list[Any]) -> list[bytes]:
        """``prepare`` for each event; raises the first InvalidEvent (with its index in
        ``index``).  With the C accelerator the common case is one call for the batch."""
        fast = self._fast_many(events, None)
        if None not in fast:  # the common case: every event took the C path
            return fast  # type: ignore[return-value]
        out: list[bytes] = []
        for i, (event, done) in enumerate(zip(events, fast, strict=True)):
            if done is None:
                try:
                    done = self.prepare(event)
                except InvalidEvent as exc:
                    exc.index = i
                    raise
            out.append(done)
        return out

    def _fast_many(self, items: list[Any], loads: Any) -> list[bytes | None]:
        if _native is None:
            return [None] * len(items)
        fast: list[bytes | None] = _native.prepare_many(
            items, loads, self.max_event_bytes * 2, orjson.dumps, _OPTION_KWNAMES, _ORJSON_OPTS,
            self.max_event_bytes, self.max_depth, self._shared.box)
        return fast

    # -- internals ------------------------------------------------------------------------

    def _needs_redaction(self, c: _Compiled, event: dict[str, Any], out: bytes, screened: int) -> bool:
        """Could anything need redaction?  No false negatives (the exact rules run only when
        this says yes); false positives only cost time.  Values (and keys holding secret
        values) through the screen of the serialised bytes; key names through a per-key-set
        cache."""
        if c.redact_values and (screened & SCREEN_HINT or (screened & SCREEN_DIGITS and _card_check(out))):
            return True
        if screened & SCREEN_FLAT and type(event) is dict:
            return self._keyset_secret(c, event)
        return self._keys_suspect(c, event, 0)

    def _keyset_secret(self, c: _Compiled, node: dict[str, Any]) -> bool:
        # events of one application repeat a few key sets: cache the verdict per key set
        keys = tuple(node)
        hit = c.keyset_cache.get(keys)
        if hit is None:
            hit = c.key_rule_on and any(k not in c.keep and c.is_secret_key(k) for k in keys)
            cost = _keyset_cost(keys)
            if cost >= 0:
                total = c.keyset_cache_cost
                if len(c.keyset_cache) >= 4096 or total[0] + cost > _KEYSET_CACHE_BUDGET:
                    c.keyset_cache.clear()
                    total[0] = 0
                c.keyset_cache[keys] = hit
                total[0] += cost
        return hit

    def _keys_suspect(self, c: _Compiled, node: Any, depth: int) -> bool:
        if depth > 256:
            return True
        if type(node) is dict:
            # per key (not per key set): the C fast path checks a nested event's keys one by
            # one against these verdicts, so every key is judged and recorded
            verdicts = c.key_verdicts
            for k in node:
                hit = verdicts.get(k)
                if hit is None:
                    hit = c.key_rule_on and k not in c.keep and c.is_secret_key(k)
                    if len(k) <= _CACHED_KEY_LEN:  # (a longer key: judged each time)
                        if len(verdicts) >= 65536:
                            verdicts.clear()
                        verdicts[k] = hit
                if hit:
                    return True
            values: Iterable[Any] = node.values()
        elif type(node) is list or type(node) is tuple:
            values = node
        else:
            return isinstance(node, dict | list | tuple)  # container subclasses: take the exact path
        for v in values:
            t = type(v)
            if t is dict or t is list or t is tuple:
                if self._keys_suspect(c, v, depth + 1):
                    return True
            elif t is not str and isinstance(v, dict | list | tuple):
                return True
        return False

    def _check_structure(self, event: Any) -> None:
        stack: list[tuple[Any, int]] = [(event, 1)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                if depth > self.max_depth:
                    raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels")
                stack.extend((v, depth + 1) for v in node.values())
            elif isinstance(node, list | tuple):
                if depth > self.max_depth:
                    raise InvalidEvent("too-deep", f"nesting deeper than {self.max_depth} levels")
                stack.extend((v, depth + 1) for v in node)
            elif isinstance(node, float) and not math.isfinite(node):
                raise InvalidEvent("not-finite", f"{node!r} is not a JSON number (NaN and Infinity are refused)")

    def _redact(self, c: _Compiled, node: Any, counts: dict[str, int]) -> tuple[Any, bool]:
        if isinstance(node, dict):
            changed = False
            out: dict[str, Any] = {}
            for k, v in node.items():
                if k in c.keep:
                    out[k] = v
                    continue
                name = k
                if c.redact_values:
                    name = c.redact_text(k, counts)  # a secret used as a key
                    if name != k:
                        changed = True
                        n = 2
                        while name in out or name in node:
                            name = f"{c.redact_text(k, None)}#{n}"
                            n += 1
                if c.key_rule_on and c.is_secret_key(k):
                    out[name] = c._mark(KEY_RULE, counts)
                    changed = True
                else:
                    nv, ch = self._redact(c, v, counts)
                    out[name] = nv
                    changed |= ch
            return out, changed
        if isinstance(node, list | tuple):
            items = [self._redact(c, v, counts) for v in node]
            return [v for v, _ in items], any(ch for _, ch in items)
        if c.redact_values:
            if isinstance(node, str):
                cleaned = c.redact_text(node, counts)
                return cleaned, cleaned != node
            if isinstance(node, int | float) and not isinstance(node, bool) and c.card_number(node):
                return c._mark("card-number", counts), True
        return node, False


def _classify_encode_error(exc: Exception) -> tuple[str, str]:
    msg = str(exc)
    low = msg.lower()
    if "dict key must be str" in low:
        return "non-string-key", "object keys must be strings"
    if "surrogates not allowed" in low or "utf-8" in low:
        return "bad-utf8", "a string contains a lone surrogate or invalid UTF-8"
    if "recursion limit" in low:
        return "too-deep", "nesting is too deep"
    if "integer exceeds" in low:
        return "int-range", "integers must fit in 64 bits"
    if "not json serializable" in low:
        return "not-serialisable", msg.replace("Type is not JSON serializable", "value of type is not JSON")
    return "not-serialisable", msg


DEFAULT_SANITISER = Sanitiser()


def redact_value(text: str) -> str:
    """Replace secret-looking parts of one string value with the default rules."""
    return DEFAULT_SANITISER._c.redact_text(text, None)


def sanitiser_of(appender: Any, max_event_bytes: int) -> Sanitiser:
    """The sanitiser an ingest server uses for ``appender``: the log's own
    (``HotLog.sanitiser``) with ingest's size limit, or the built-in rules for an appender
    that has none."""
    own = getattr(appender, "sanitiser", None)
    if isinstance(own, Sanitiser):
        return own.with_max_event_bytes(max_event_bytes)
    return Sanitiser(max_event_bytes=max_event_bytes)
