"""Find and scrub personal data (PII) in free text before it becomes fine-tuning data.

Detected: e-mail addresses, phone numbers, payment-card numbers, IBANs, US social security
numbers and IP addresses (v4 and v6). Every type except e-mail is checked beyond its shape
(Luhn, ISO 13616 mod-97, SSA ranges, ``ipaddress``, libphonenumber metadata) because a
digit-heavy support ticket is full of numbers that look like PII and are not: order numbers,
dates, amounts, tracking codes. Person names and street addresses are *not* detected (see
``NOT_DETECTED``); a scrubbed corpus can still contain them.

Context rules, and what each one costs:

- E-mail: Unicode local parts and domains, punycode, ``@localhost``, quoted local parts and the
  bracketed "(at)" / "[dot]" obfuscations are read; the plain-word "anna at example dot com"
  is not (it cannot be told from prose such as "look at example dot com").
- Phones: national numbers without a trunk "0" are read only for Brazil, China (mobiles) and
  Spain, and only in the shapes those countries print; a bare "612345678" stays unread.
- US SSN: nine undelimited digits count only after an SSN word ("SSN", "SS#", "social security
  no.") at most four words earlier, and only inside the issued ranges.
- IPv4: a dotted quad right after a version or numbering word ("version", "build", "firmware",
  "upgraded to", "section", "§", ...) or tagged "-beta" / "+build7" is a version, not an
  address. A real address so introduced ("updated to 10.0.0.5") is missed; a bare "1.2.3.4"
  is still reported, since without a word nothing tells it from an address.
- IPv6: "Face::Add", "a::b" and "dead::beef" parse as addresses. A candidate is kept only if no
  group mixes cases, it has a decimal digit or at least three groups, and it is not glued to
  code syntax ("->" or "$" before; "(", "<", "{", "->" or ".name" after). A digit-free
  two-group address ("fd::a") is missed; "fe80::1", "::1" and "2001:db8::..." are unaffected.

Nothing here logs or prints: the values found are PII themselves.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from adaptlab.config import PII_TYPES

NOT_DETECTED: tuple[str, ...] = ("PERSON_NAME", "STREET_ADDRESS")

# Lower rank wins an overlap. Checksum- or structure-validated types outrank PHONE because a
# card number or IBAN often also parses as a "valid" phone number somewhere in the world.
_RANK: dict[str, int] = {
    "EMAIL": 0,
    "IBAN": 1,
    "CREDIT_CARD": 2,
    "US_SSN": 3,
    "IP_ADDRESS": 4,
    "PHONE": 5,
}

# The default region reads NANP national numbers ("(415) 555-2671") and every "+CC" number.
_DEFAULT_REGION = "US"
# National formats with a leading trunk "0" ("020 7946 0958", "030 901820", "01 42 68 53 00").
# These regions are only consulted for matches starting with 0, so a bare 10-digit order number
# that India's metadata would accept is not read as an Indian phone.
_TRUNK_REGIONS: tuple[str, ...] = ("GB", "DE", "FR", "AU", "IN", "NL", "IT")
# Even the shortest numbers (Niue's "+683 4002") have 7 digits once the country code is counted,
# and the national formats read here are longer; with fewer digits the matcher is not run.
_MIN_PHONE_DIGITS = 7
# Characters after a digit run that the matcher also sees: room for " ext. 1234" or ":30".
_RIGHT_CONTEXT = 16
_MAX_SCRUB_PASSES = 16

# IBAN length per country, from the SWIFT IBAN registry. An unknown country code is not an IBAN,
# which keeps letter-digit tracking codes ("JD01...") out even when mod-97 happens to hold.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# E-mail: the "practical" RFC 5322 subset (dot-atoms or a quoted local part; no IP-literal
# domains) widened to RFC 6531/IDNA: Unicode letters in the local part and in domain labels,
# punycode ("xn--") labels and TLDs, and the bare host "localhost". An ASCII TLD only has to
# stop before an ASCII word character, so "user@example.jpです" ends at ".jp".
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_EMAIL_DOMAIN = (
    r"(?:(?:" + _LABEL + r"\.)+(?:[A-Za-z]{2,63}(?![A-Za-z0-9_-])|xn--[A-Za-z0-9-]{1,59}(?![\w-])"
    r"|[^\W\d_A-Za-z]{2,63}(?![\w-]))|localhost(?![\w-])(?!\.\w))"
)
_EMAIL_RE = re.compile(
    r"(?:(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*"
    r'|(?<![\w"])"(?:[^"\\\r\n]|\\.){1,64}")'
    r"@" + _EMAIL_DOMAIN
)
# "anna (at) example.com", "anna[at]example[dot]com": the bracketed words people type to hide an
# address from harvesters. The plain-word form "anna at example dot com" is not read: "look at
# example dot com" is prose, and telling the two apart needs more than a pattern.
_AT = r"\s?[(\[{]\s?at\s?[)\]}]\s?"
_DOT = r"(?:\.|\s?[(\[{]\s?dot\s?[)\]}]\s?)"
_OBFUSCATED_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*" + _AT
    + r"(?:" + _LABEL + _DOT + r")+[A-Za-z]{2,63}(?![A-Za-z0-9_-])",
    re.IGNORECASE,
)  # fmt: skip
# Digit runs are bounded on both sides so that a longer number (a 22-digit tracking code, a
# phone followed by more digits) is never cut into a card-, SSN- or IP-sized piece.
_NUM_START = r"(?<![\w+])(?<![0-9][ .-])"
_NUM_END = r"(?!\w)(?![ .-][0-9])"
_CARD_RE = re.compile(
    _NUM_START + r"(?:[0-9]{13,19}"
    r"|[0-9]{4}(?P<s>[ -])[0-9]{4}(?P=s)[0-9]{4}(?P=s)(?:[0-9]{4}(?P=s)[0-9]{1,3}|[0-9]{1,4})"
    r"|[0-9]{4}(?P<a>[ -])[0-9]{6}(?P=a)[0-9]{4,5})" + _NUM_END  # Amex 4-6-5, Diners 4-6-4
)
_SSN_RE = re.compile(_NUM_START + r"([0-9]{3})(?P<s>[ -])([0-9]{2})(?P=s)([0-9]{4})" + _NUM_END)
# Nine bare digits are an SSN only when the text has just said so: "SSN 123456789", "social
# security no. 078051120", "SS# ...", with at most four words in between ("SSN on file is").
_BARE_SSN_RE = re.compile(_NUM_START + r"([0-9]{3})([0-9]{2})([0-9]{4})" + _NUM_END)
_SSN_CONTEXT_RE = re.compile(
    r"(?:\bssns?\b|\bss\s?#|\bsocial[\s-]+security\b|\bsoc\.?\s?sec\b)"
    r"(?:[\s:#.,'-]+[^\W\d]+){0,4}[\s:#.,'-]*$",
    re.IGNORECASE,
)
_SSN_CONTEXT_CHARS = 60
_IBAN_RE = re.compile(
    r"(?<!\w)[A-Za-z]{2}[0-9]{2}"
    r"(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,3})?)(?!\w)"
)
# A letter before the quad ("v2.0.1.4") or a pre-release / build tag after it ("1.2.3.4-beta",
# "1.2.3.4+build7") marks a version string, not an address.
_IPV4_RE = re.compile(
    r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}" + r"(?!\w)(?!\.[0-9])(?![-+][A-Za-z])"
)
# A quad introduced as a version or a section number ("version 10.0.0.1", "build 4.3.2.1",
# "upgraded to 1.2.3.4", "clause 2.3.1.4") is one. Only a few linking words may come between.
_NUMBERING_CONTEXT_RE = re.compile(
    r"(?:\b(?:v|vers?|versions?|build|release[sd]?|firmware|fw|rev|revision|updated?|patch(?:ed)?"
    r"|upgraded?|hotfix|sdk|kernel|driver|bios|section|sec|clause|chapter|ch|paragraph|para"
    r"|article|art|table|figure|fig|appendix|step|rule)\.?|§)"
    r"(?:\s*[:#]|\s+(?:is|was|to|of|no\.?|number|now))*\s*$",
    re.IGNORECASE,
)
_NUMBERING_CONTEXT_CHARS = 40
_IPV6_RE = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?:?(?![\w:])"
)
# Scope and member syntax glued to a candidate: "obj->a1::b2", "$x::f", "a1::b2(", "a1::b2<T>".
_CODE_BEFORE_RE = re.compile(r"(?:->|[$\\&*~])$")
_CODE_AFTER_RE = re.compile(r"[(<{]|->|\.[A-Za-z_]")
_DATE_RE = re.compile(
    r"(?<![0-9])(?<![0-9][./-])(?:[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"|[0-9]{1,2}(?P<s>[./-])[0-9]{1,2}(?P=s)(?:[0-9]{4}|[0-9]{2}))(?![0-9])(?![./-][0-9])"
)
_CURRENCY = r"(?:[$€£¥₹]|\b(?:usd|eur|gbp|inr|rs|chf|aud|cad|jpy)\b\.?)"
# A number introduced as an identifier ("order #", "ticket no.") or glued to one ("ORD-2022-...",
# "INV/...") is not a phone number even when its digits happen to form a valid one.
_ID_CONTEXT_RE = re.compile(
    r"(?:(?:#|\b(?:order|invoice|inv|tracking|ticket|case|ref|reference|confirmation|account|"
    r"acct|policy|booking|transaction|txn|serial|sku|item)\b(?:\s*(?:no\.?|number|num|id|code))?"
    r"\s*[:#.]?)\s*|[A-Za-z0-9]_|[A-Za-z][/-]|" + _CURRENCY + r"\s*)$",
    re.IGNORECASE,
)
# Money written after the number ("4155552671.00 EUR") is an amount, not a phone.
_AMOUNT_AFTER_RE = re.compile(r"(?:[.,][0-9]{1,2})?\s*" + _CURRENCY, re.IGNORECASE)
# libphonenumber reads any Unicode digit (fullwidth, Arabic-Indic), so phone counting does too.
_UNICODE_DIGIT_RE = re.compile(r"\d")
# Digits and the punctuation libphonenumber accepts inside a number (dashes of every width,
# brackets, dots, slashes, spaces): the stretch of text a phone number can occupy.
_PHONE_RUN_RE = re.compile(r"[+(\[]*\d[\d\s().\[\]/~\u2010-\u2015\u2212\u30fc\uff0d-]*")
# A trunk "0" that starts a number rather than continuing one: a candidate national number.
_TRUNK_RE = re.compile(r"(?<![\w.,/:+-])(?<![0-9][ .)-])\(?0[0-9]")
# National numbers of regions that dial them without a trunk "0". Their metadata would accept
# far too many bare digit runs (any 9 digits from 6 in Spain), so they are read only in the
# exact shape each country prints: Brazil "(11) 91234-5678" / "11 2345-6789" (the hyphen is
# required), China's mobiles "138 0013 8000" / "13800138000", Spain "612 34 56 78" /
# "912 345 678". The digit-run bounds keep them from being cut out of a longer number.
_NATIONAL_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("BR", re.compile(
        _NUM_START + r"(?:\([1-9]{2}\)|[1-9]{2}) ?(?:9 ?[0-9]{4}|[2-5][0-9]{3})-[0-9]{4}" + _NUM_END
    )),
    ("CN", re.compile(_NUM_START + r"1[3-9][0-9](?P<s>[ -]?)[0-9]{4}(?P=s)[0-9]{4}" + _NUM_END)),
    ("ES", re.compile(
        _NUM_START + r"[6-9][0-9]{2}(?: [0-9]{2} [0-9]{2} [0-9]{2}| [0-9]{3} [0-9]{3})" + _NUM_END
    )),
)  # fmt: skip


@dataclass(frozen=True)
class PiiSpan:
    """One PII value found in a text: its type (one of ``PII_TYPES``) and ``text[start:end]``."""

    type: str
    start: int
    end: int


@dataclass(frozen=True)
class _Candidate:
    """A span with a PII shape; ``valid`` says whether it also passed the type's check.

    Shape-only candidates (a 16-digit number failing Luhn, an IBAN with a wrong check digit) are
    not reported, but they still claim their characters against lower-ranked types and phones.
    """

    span: PiiSpan
    valid: bool


def luhn_valid(digits: str) -> bool:
    """Whether an all-digit string passes the Luhn (mod-10) check used by payment cards."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    # Double every second digit from the right; a doubled digit above 9 contributes its digit sum.
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces allowed) has a known country, its length and mod-97 == 1."""
    compact = iban.replace(" ", "").upper()
    if not compact.isascii() or not compact.isalnum():
        return False
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    # ISO 13616: move the country and check digits to the end, letters become 10..35.
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether the three SSN parts lie outside the ranges the SSA never issues."""
    area_number = int(area)
    if area_number == 0 or area_number == 666 or area_number >= 900:
        return False
    return int(group) != 0 and int(serial) != 0


def _emails(text: str) -> Iterator[_Candidate]:
    if "@" in text:
        for match in _EMAIL_RE.finditer(text):
            yield _Candidate(PiiSpan("EMAIL", match.start(), match.end()), True)
    if _has_obfuscated_at(text):
        for match in _OBFUSCATED_EMAIL_RE.finditer(text):
            yield _Candidate(PiiSpan("EMAIL", match.start(), match.end()), True)


def _cards(text: str) -> Iterator[_Candidate]:
    for match in _CARD_RE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        valid = luhn_valid(digits)
        yield _Candidate(PiiSpan("CREDIT_CARD", match.start(), match.end()), valid)


def _ssns(text: str) -> Iterator[_Candidate]:
    for match in _SSN_RE.finditer(text):
        valid = ssn_valid(match.group(1), match.group(3), match.group(4))
        yield _Candidate(PiiSpan("US_SSN", match.start(), match.end()), valid)
    for match in _BARE_SSN_RE.finditer(text):
        low = max(0, match.start() - _SSN_CONTEXT_CHARS)
        if _SSN_CONTEXT_RE.search(text, low, match.start()):
            valid = ssn_valid(match.group(1), match.group(2), match.group(3))
            yield _Candidate(PiiSpan("US_SSN", match.start(), match.end()), valid)


def _ibans(text: str) -> Iterator[_Candidate]:
    for match in _IBAN_RE.finditer(text):
        expected = _IBAN_LENGTHS.get(match.group()[:2].upper())
        if expected is None:
            continue
        end = _iban_end(match.group(), expected)
        if end is None:
            continue
        start = match.start()
        valid = iban_valid(text[start : start + end])
        yield _Candidate(PiiSpan("IBAN", start, start + end), valid)


def _iban_end(candidate: str, expected: int) -> int | None:
    """Where an IBAN of ``expected`` characters ends inside ``candidate``, or None.

    The spaced pattern is greedy and can swallow a following 4-character word or number
    ("... 1332 2024"); the country's fixed length says where the IBAN really stops. A cut that
    falls inside a group means the candidate was not one IBAN.
    """
    seen = 0
    for index, char in enumerate(candidate):
        if char != " ":
            seen += 1
        if seen == expected:
            cut = index + 1
            return cut if cut == len(candidate) or candidate[cut] == " " else None
    return None


def _ip_addresses(text: str) -> Iterator[_Candidate]:
    if "." in text:
        for match in _IPV4_RE.finditer(text):
            low = max(0, match.start() - _NUMBERING_CONTEXT_CHARS)
            # A version keeps its shape claim, so no phone reading of its digits comes back.
            valid = _parses_as_ip(match.group()) and not _NUMBERING_CONTEXT_RE.search(
                text, low, match.start()
            )
            yield _Candidate(PiiSpan("IP_ADDRESS", match.start(), match.end()), valid)
    if ":" in text:
        yield from _ipv6_addresses(text)


def _ipv6_addresses(text: str) -> Iterator[_Candidate]:
    for match in _IPV6_RE.finditer(text):
        value, start = match.group(), match.start()
        # "from fe80::1: please" - a trailing colon is clause punctuation, not an empty group.
        if not _parses_as_ip(value) and value.endswith(":"):
            value = value[:-1]
        end = start + len(value)
        # A bare "::" is valid (the unspecified address) but in prose it is punctuation.
        if value.strip(":") and _parses_as_ip(value) and _plausible_ipv6(value, text, start, end):
            yield _Candidate(PiiSpan("IP_ADDRESS", start, end), True)


def _plausible_ipv6(value: str, text: str, start: int, end: int) -> bool:
    """Whether a parsed IPv6 candidate reads as an address rather than a scope path in code.

    "Face::Add", "a::b" and "dead::beef" parse, but addresses are written in one case per group
    and nearly always carry a decimal digit ("fe80::1", "2001:db8::", "::1"). So: no group may
    mix cases, a digit-free candidate needs three groups, and nothing code-like may be glued on.
    """
    groups = [group for group in re.split(r"[:.]", value) if group]
    if any(not group.islower() and not group.isupper() and not group.isdigit() for group in groups):
        return False
    if not any(char.isdigit() for char in value) and len(groups) < 3:
        return False
    return not _CODE_BEFORE_RE.search(text, max(0, start - 2), start) and not _CODE_AFTER_RE.match(
        text, end
    )


def _parses_as_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _phone_matches(text: str) -> Iterator[tuple[int, int]]:
    """Spans that libphonenumber accepts as valid numbers, before any veto.

    The matcher parses and validates every digit group it meets (times, prices, versions), so
    it only sees short windows around runs holding enough digits to be a phone number; that
    cuts the cost on digit-heavy text several times over without changing what it finds.
    """
    for run in _PHONE_RUN_RE.finditer(text):
        if len(_UNICODE_DIGIT_RE.findall(run.group())) < _MIN_PHONE_DIGITS:
            continue
        # One character of left context keeps the matcher's "not glued to a word" check; the
        # right context lets it see an extension ("ext. 12") or a time suffix (":30").
        low, high = max(0, run.start() - 1), min(len(text), run.end() + _RIGHT_CONTEXT)
        window = text[low:high]
        for match in PhoneNumberMatcher(window, _DEFAULT_REGION, leniency=Leniency.VALID):
            if run.start() <= low + match.start < run.end():
                yield low + match.start, low + match.end
        for trunk in _TRUNK_RE.finditer(text, run.start(), run.end()):
            yield from _national_matches(window, trunk.start() - low, low)


def _national_matches(window: str, start: int, offset: int) -> Iterator[tuple[int, int]]:
    """The first trunk-region reading of a valid number starting exactly at ``window[start]``."""
    for region in _TRUNK_REGIONS:
        for match in PhoneNumberMatcher(window, region, leniency=Leniency.VALID):
            if match.start == start:
                yield offset + match.start, offset + match.end
                return


def _national_shape_matches(text: str) -> Iterator[tuple[int, int]]:
    """Spans in one of ``_NATIONAL_SHAPES`` that are valid numbers of that shape's region."""
    for region, shape in _NATIONAL_SHAPES:
        for match in shape.finditer(text):
            try:
                number = phonenumbers.parse(match.group(), region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number_for_region(number, region):
                yield match.start(), match.end()


def _phones(text: str, claimed: list[PiiSpan]) -> Iterator[_Candidate]:
    """Valid phone numbers outside ``claimed`` spans that are not dates, identifiers or money."""
    dates = [PiiSpan("DATE", m.start(), m.end()) for m in _DATE_RE.finditer(text)]
    masked = _masked(text, claimed + dates)
    spans = set(_phone_matches(masked)) | set(_national_shape_matches(masked))
    for start, end in spans:
        if _ID_CONTEXT_RE.search(text, max(0, start - 40), start):
            continue
        if _AMOUNT_AFTER_RE.match(text, end):
            continue
        yield _Candidate(PiiSpan("PHONE", start, end), True)


def _masked(text: str, spans: list[PiiSpan]) -> str:
    """``text`` with ``spans`` overwritten by letters, keeping every offset.

    A phone overlapping a better-ranked span or a date would be dropped anyway, so the matcher
    is spared their digits (the main cost on digit-heavy text). Letters, not blanks: a number
    glued to a masked span stays glued to a "word", which the matcher rejects as before.
    """
    if not spans:
        return text
    chars = list(text)
    for span in spans:
        chars[span.start : span.end] = "x" * (span.end - span.start)
    return "".join(chars)


def _overlaps(a: PiiSpan, b: PiiSpan) -> bool:
    return a.start < b.end and b.start < a.end


def _resolve(candidates: Iterable[_Candidate]) -> list[PiiSpan]:
    """Pick non-overlapping valid spans: better-ranked type first, then the longer span.

    Shape-only candidates take part and claim their characters without being reported, so
    the digits of an IBAN with a wrong check digit cannot come back as a card or a phone.
    """
    claimed: list[PiiSpan] = []
    found: list[PiiSpan] = []
    order = sorted(candidates, key=_priority)
    for candidate in order:
        if any(_overlaps(candidate.span, other) for other in claimed):
            continue
        claimed.append(candidate.span)
        if candidate.valid:
            found.append(candidate.span)
    return sorted(found, key=lambda span: span.start)


def _priority(candidate: _Candidate) -> tuple[int, bool, int, int]:
    span = candidate.span
    # Rank, then validated before shape-only, then longer (negated length), then leftmost.
    return _RANK[span.type], not candidate.valid, span.start - span.end, span.start


def _allowed_types(types: Iterable[str]) -> frozenset[str]:
    wanted = frozenset((types,) if isinstance(types, str) else types)
    unknown = sorted(wanted.difference(PII_TYPES))
    if unknown:
        raise ValueError(
            f"unknown PII type(s) {', '.join(unknown)}; allowed: {', '.join(PII_TYPES)}"
        )
    return wanted


def _might_contain_pii(text: str) -> bool:
    # Every detector needs a digit, an "@" (e-mail), a ":" (hex-only IPv6 such as "fe80::") or a
    # bracket closing after "at" ("anna (at) example.com").
    if "@" in text or ":" in text or _UNICODE_DIGIT_RE.search(text) is not None:
        return True
    return _has_obfuscated_at(text)


def _has_obfuscated_at(text: str) -> bool:
    lowered = text.lower()
    return "at)" in lowered or "at]" in lowered or "at}" in lowered


def detect(text: str, types: Iterable[str] = PII_TYPES) -> list[PiiSpan]:
    """Find PII in ``text``: sorted, non-overlapping spans of the requested ``types``.

    All structural detectors run even when ``types`` excludes them, so that a card number is
    never reported as a phone just because CREDIT_CARD was not asked for. Raises ValueError
    for a type name not in ``PII_TYPES``.
    """
    wanted = _allowed_types(types)
    if not wanted or not _might_contain_pii(text):
        return []
    candidates = [*_emails(text), *_ibans(text), *_cards(text), *_ssns(text)]
    candidates.extend(_ip_addresses(text))
    if "PHONE" in wanted and len(_UNICODE_DIGIT_RE.findall(text)) >= _MIN_PHONE_DIGITS:
        candidates.extend(_phones(text, [candidate.span for candidate in candidates]))
    resolved = _resolve(candidates)
    return [span for span in resolved if span.type in wanted]


def scrub(text: str, types: Iterable[str] = PII_TYPES) -> tuple[str, Counter[str]]:
    """Replace each PII span with a typed placeholder such as ``<EMAIL>``; count them per type.

    The result is scanned again until nothing more is found: a value glued to a removed one
    ("<card digits>::ffff:10.0.0.1") may only stand free once its neighbour is a placeholder.
    That makes ``scrub`` idempotent. Text without PII comes back as the very same string.
    """
    wanted = _allowed_types(types)
    counts: Counter[str] = Counter()
    # Each pass turns at least one span into a placeholder, and no detector matches across a
    # placeholder's "<" or ">", so the passes run out; the bound is a guard, not a limit.
    for _ in range(_MAX_SCRUB_PASSES):
        spans = detect(text, wanted)
        if not spans:
            break
        counts.update(span.type for span in spans)
        text = _replace(text, spans)
    return text, counts


def _replace(text: str, spans: list[PiiSpan]) -> str:
    pieces: list[str] = []
    cursor = 0
    for span in spans:
        pieces.append(text[cursor : span.start])
        pieces.append(f"<{span.type}>")
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces)


__all__ = [
    "NOT_DETECTED",
    "PII_TYPES",
    "PiiSpan",
    "detect",
    "iban_valid",
    "luhn_valid",
    "scrub",
    "ssn_valid",
]
