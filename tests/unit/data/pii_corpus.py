"""Seeded generator of support and banking messages with gold PII spans and PII-like decoys.

Every value is generated, never copied from real data: cards are random prefixes completed with
a Luhn digit, IBANs get computed ISO 13616 check digits, phones are random subscriber digits
kept only when libphonenumber's metadata calls them valid for their country. E-mail, phone and
SSN values also come in the harder forms each gold span names in ``form`` (internationalised
and quoted addresses, "(at)" obfuscation, BR/CN/ES national phones, undelimited SSNs), so that
recall can be measured per form as well as per type. Decoys are the
numbers a support ticket is full of that are *not* PII: order numbers, dates, amounts, times,
versions, tracking codes, postcodes, and near-misses (Luhn-failing 16-digit numbers, IBANs with
a wrong check digit, SSNs in never-issued ranges, dotted quads with an octet over 255).
"""

from __future__ import annotations

import ipaddress
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

PII_SLOTS: tuple[str, ...] = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS")


@dataclass(frozen=True)
class GoldSpan:
    """``text[start:end]`` is a value of ``kind``: a PII type, or a decoy kind for decoys."""

    kind: str
    start: int
    end: int
    # How the value is written ("idn_domain", "cn_mobile", "bare"...); "" for the plain forms.
    form: str = ""


@dataclass(frozen=True)
class Sample:
    text: str
    pii: tuple[GoldSpan, ...]
    decoys: tuple[GoldSpan, ...]


Rng = random.Random

# --------------------------------------------------------------------------------------------
# PII values
# --------------------------------------------------------------------------------------------

_FIRST = ["anna", "li", "omar", "sofia", "james", "priya", "lukas", "chloe", "mateo", "yuki"]
_LAST = ["schmidt", "nguyen", "okafor", "garcia", "smith", "dubois", "rossi", "kumar", "tan"]
_DOMAINS = [
    "gmail.com",
    "outlook.com",
    "example.org",
    "mail.acme-bank.co.uk",
    "support.northwind.io",
    "eu.mail.contoso.com",
    "student.uni-heidelberg.de",
    "web.de",
    "orange.fr",
    "fastmail.fm",
]


def email(rng: Rng) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+{rng.choice(['bank', 'billing', 'news', 'x1'])}",
            f"{last}.{first}-{rng.randint(1970, 2005)}",
            f"{first}{rng.randint(100, 9999)}",
        ]
    )
    value = f"{local}@{rng.choice(_DOMAINS)}"
    return value.upper() if rng.random() < 0.05 else value


_IDN_DOMAINS = [
    "correo.españa.es",
    "bücher.de",
    "例え.jp",
    "пример.рф",
    "mañana.com.mx",
    "köln-bonn.de",
    "παράδειγμα.gr",
]
_PUNYCODE_DOMAINS = ["xn--bcher-kva.de", "xn--e1afmkfd.xn--p1ai", "mail.xn--r8jz45g.jp"]
_UNICODE_LOCALS = ["müller", "josé.garcía", "zoë", "søren", "françois", "иван", "李雷", "ümit"]
_OBFUSCATED_DOMAINS = [("example", "com"), ("acme-bank", "co.uk"), ("web", "de"), ("mail", "fr")]


def _obfuscated(rng: Rng, local: str, brackets: str) -> str:
    label, tld = rng.choice(_OBFUSCATED_DOMAINS)
    at, dot = ("at", "dot") if rng.random() < 0.8 else ("AT", "DOT")
    space = rng.choice([" ", ""])
    open_, close = brackets
    tag = f"{space}{open_}{at}{close}{space}"
    if rng.random() < 0.5:
        return f"{local}{tag}{label}.{tld}"
    dotted = f"{space}{open_}{dot}{close}{space}".join([label, *tld.split(".")])
    return f"{local}{tag}{dotted}"


def email_form(rng: Rng) -> tuple[str, str]:
    """An e-mail address and the name of its form: plain ASCII half the time."""
    form = rng.choice(
        ["plain"] * 7
        + ["idn_domain", "unicode_local", "punycode", "localhost", "quoted", "at_paren"]
        + ["at_bracket"]
    )
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    if form == "plain":
        return email(rng), ""
    if form == "idn_domain":
        return f"{rng.choice([first, f'{first}.{last}'])}@{rng.choice(_IDN_DOMAINS)}", form
    if form == "unicode_local":
        return f"{rng.choice(_UNICODE_LOCALS)}@{rng.choice(_DOMAINS)}", form
    if form == "punycode":
        return f"{first}@{rng.choice(_PUNYCODE_DOMAINS)}", form
    if form == "localhost":
        return f"{rng.choice(['root', 'admin', 'postgres', first])}@localhost", form
    if form == "quoted":
        return f'"{first} {last}"@{rng.choice(_DOMAINS)}', form
    return _obfuscated(rng, f"{first}.{last}", "()" if form == "at_paren" else "[]"), form


_US_AREA_CODES = ["212", "415", "646", "312", "617", "206", "303", "512", "702", "818", "404"]
# Countries written here in national format too (NANP, or a leading trunk "0"); the rest only
# internationally. Italian mobiles have no trunk "0", so they are kept international below.
_NATIONAL_OK = ("US", "GB", "DE", "FR", "AU", "IN", "NL", "IT")
_INTERNATIONAL_ONLY = ("ES", "JP", "BR", "MX", "SG", "ZA", "CH", "CA")


def _random_number(rng: Rng, region: str, kind: int | None = None) -> phonenumbers.PhoneNumber:
    """A valid number for ``region``: an example number with fresh random subscriber digits."""
    if kind is None:
        kind = rng.choice([PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    nsn = phonenumbers.national_significant_number(example)
    for _ in range(100):
        if region == "US":
            exchange = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
            digits = rng.choice(_US_AREA_CODES) + exchange + f"{rng.randint(0, 9999):04d}"
        else:
            keep = max(2, len(nsn) - rng.randint(4, 6))
            digits = nsn[:keep] + "".join(rng.choice(string.digits) for _ in nsn[keep:])
        candidate = phonenumbers.parse(digits, region)
        if phonenumbers.is_valid_number(candidate):
            return candidate
    return example


def _phone_format(rng: Rng, number: phonenumbers.PhoneNumber, region: str) -> str:
    intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    nsn = phonenumbers.national_significant_number(number)
    options = [intl, phonenumbers.format_number(number, PhoneNumberFormat.E164)]
    options.append(intl.replace(" ", "-"))
    if region == "US" or (region in _NATIONAL_OK and national.startswith(("0", "(0"))):
        options += [national, national]
    if region == "US":
        options += [f"{nsn[:3]}.{nsn[3:6]}.{nsn[6:]}", f"{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}"]
        options += [f"1-{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}", f"+1 ({nsn[:3]}) {nsn[3:6]}-{nsn[6:]}"]
    if region in ("GB", "DE", "FR", "NL", "CH"):
        rest = intl.split(" ", 1)[1]
        options += [f"{intl.split(' ')[0]} (0){rest}", "00" + intl[1:]]
    if region == "FR":
        options.append(national.replace(" ", "."))
    return rng.choice(options)


def phone(rng: Rng) -> str:
    region = rng.choice(_NATIONAL_OK + _NATIONAL_OK + _INTERNATIONAL_ONLY)
    return _phone_format(rng, _random_number(rng, region), region)


def _brazil_national(rng: Rng) -> str:
    # "(11) 91234-5678" for mobiles, "(11) 2345-6789" for fixed lines, with or without brackets.
    national = phonenumbers.format_number(_random_number(rng, "BR"), PhoneNumberFormat.NATIONAL)
    return national if rng.random() < 0.6 else national.replace("(", "").replace(")", "")


def _china_mobile(rng: Rng) -> str:
    nsn = phonenumbers.national_significant_number(
        _random_number(rng, "CN", PhoneNumberType.MOBILE)
    )
    return rng.choice([f"{nsn[:3]} {nsn[3:7]} {nsn[7:]}", nsn, f"{nsn[:3]}-{nsn[3:7]}-{nsn[7:]}"])


def _spain_national(rng: Rng) -> str:
    nsn = phonenumbers.national_significant_number(_random_number(rng, "ES"))
    pairs = f"{nsn[:3]} {nsn[3:5]} {nsn[5:7]} {nsn[7:]}"
    return rng.choice([pairs, f"{nsn[:3]} {nsn[3:6]} {nsn[6:]}"])


_NATIONAL_WITHOUT_TRUNK: dict[str, Callable[[Rng], str]] = {
    "br_national": _brazil_national,
    "cn_mobile": _china_mobile,
    "es_national": _spain_national,
}


def phone_form(rng: Rng) -> tuple[str, str]:
    """A phone number and its form: a BR, CN or ES national number without a trunk 0 in 3 of 8."""
    form = rng.choice(["plain"] * 5 + list(_NATIONAL_WITHOUT_TRUNK))
    if form == "plain":
        return phone(rng), ""
    return _NATIONAL_WITHOUT_TRUNK[form](rng), form


def luhn_complete(payload: str) -> str:
    """``payload`` plus the check digit that makes it pass Luhn (computed independently)."""
    for check in string.digits:
        reversed_digits = [int(c) for c in reversed(payload + check)]
        doubled = [sum(divmod(2 * d, 10)) for d in reversed_digits[1::2]]
        if (sum(reversed_digits[0::2]) + sum(doubled)) % 10 == 0:
            return payload + check
    raise AssertionError("unreachable: one of ten check digits always works")


_CARD_KINDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("4",), 16),
    (("4",), 13),
    (("4",), 19),
    (("51", "52", "53", "54", "55", "2221", "2720"), 16),
    (("34", "37"), 15),
    (("6011", "65"), 16),
    (("35",), 16),
    (("36",), 14),
)


def _group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(digits[at : at + size])
        at += size
    return sep.join(part for part in parts if part)


def format_card(rng: Rng, digits: str) -> str:
    sep = rng.choice([" ", "-", ""])
    if len(digits) in (14, 15):  # Amex and Diners print as 4-6-5 / 4-6-4
        return _group(digits, (4, 6, 5), sep)
    return _group(digits, (4, 4, 4, 4, 3), sep)


def card(rng: Rng) -> str:
    prefixes, length = rng.choice(_CARD_KINDS)
    prefix = rng.choice(prefixes)
    payload = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return format_card(rng, luhn_complete(payload))


def _alnum(rng: Rng, n: int, alphabet: str = string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_UPPER_DIGITS = string.ascii_uppercase + string.digits
_BBANS: dict[str, Callable[[Rng], str]] = {
    "DE": lambda r: _alnum(r, 18),
    "GB": lambda r: r.choice(["WEST", "NWBK", "BARC", "LOYD", "MIDL"]) + _alnum(r, 14),
    "FR": lambda r: _alnum(r, 10) + _alnum(r, 11, _UPPER_DIGITS) + _alnum(r, 2),
    "ES": lambda r: _alnum(r, 20),
    "NL": lambda r: r.choice(["ABNA", "INGB", "RABO", "TRIO"]) + _alnum(r, 10),
    "IT": lambda r: (
        _alnum(r, 1, string.ascii_uppercase) + _alnum(r, 10) + _alnum(r, 12, _UPPER_DIGITS)
    ),
    "BE": lambda r: _alnum(r, 12),
    "CH": lambda r: _alnum(r, 5) + _alnum(r, 12, _UPPER_DIGITS),
    "AT": lambda r: _alnum(r, 16),
    "PL": lambda r: _alnum(r, 24),
}


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: 98 minus (BBAN + country + "00") mod 97, letters as 10..35."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _format_iban(rng: Rng, compact: str) -> str:
    if rng.random() < 0.35:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _compact_iban(rng: Rng) -> str:
    country = rng.choice(list(_BBANS))
    bban = _BBANS[country](rng)
    return country + iban_check_digits(country, bban) + bban


def iban(rng: Rng) -> str:
    return _format_iban(rng, _compact_iban(rng))


def ssn(rng: Rng, sep: str | None = None) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    sep = rng.choice(["-", "-", "-", " "]) if sep is None else sep
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def ssn_form(rng: Rng) -> tuple[str, str]:
    """An SSN and its form: undelimited ("bare") 40% of the time; every SSN template names it."""
    return (ssn(rng, ""), "bare") if rng.random() < 0.4 else (ssn(rng), "")


def _ipv4(rng: Rng) -> str:
    return rng.choice(
        [
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            ".".join(str(rng.randint(1, 223)) for _ in range(4)),
        ]
    )


def _ipv6(rng: Rng) -> str:
    groups = [rng.randint(0, 0xFFFF) for _ in range(8)]
    zero_from = rng.randint(1, 6)
    for i in range(zero_from, min(8, zero_from + rng.randint(0, 4))):
        groups[i] = 0  # a run of zero groups, so that compression has something to compress
    address = ipaddress.IPv6Address(sum(g << (16 * (7 - i)) for i, g in enumerate(groups)))
    value = rng.choice(
        [
            address.compressed,
            address.compressed,
            address.exploded,
            f"2001:db8::{rng.randint(1, 0xFFFF):x}",
            f"fe80::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}",
            f"::ffff:{_ipv4(rng)}",
            "::1",
        ]
    )
    return value.upper() if rng.random() < 0.15 else value


def ip_address(rng: Rng) -> str:
    return _ipv4(rng) if rng.random() < 0.55 else _ipv6(rng)


# --------------------------------------------------------------------------------------------
# Decoys: PII-shaped, not PII
# --------------------------------------------------------------------------------------------

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September"]


def order_number(rng: Rng) -> str:
    return rng.choice(
        [
            f"#{rng.randint(100, 999)}-{rng.randint(1000000, 9999999)}",
            f"#{rng.randint(2000000000, 9999999999)}",
            f"ORD-{rng.randint(2019, 2025)}-{rng.randint(100000, 999999)}",
            f"number {rng.randint(2000000000, 9999999999)}",
            f"no. {rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        ]
    )


def date(rng: Rng) -> str:
    y, m, d = rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}/{m:02d}/{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}.{m:02d}.{y}",
            f"{rng.choice(_MONTHS)} {d} {y}",
            f"{d} {rng.choice(_MONTHS)} {y}",
            f"{y}-{m:02d}-{d:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        ]
    )


def amount(rng: Rng) -> str:
    whole, cents = rng.randint(1, 99999), rng.randint(0, 99)
    return rng.choice(
        [
            f"${whole:,}.{cents:02d}",
            f"£{rng.randint(5, 999)}",
            f"{whole:,}.{cents:02d}".replace(",", " ").replace(".", ",") + " EUR",
            f"€{whole:,}".replace(",", ".") + f",{cents:02d}",
            f"USD {whole * 100:,}.{cents:02d}",
            f"Rs. {rng.randint(1, 9)},{rng.randint(10, 99)},{rng.randint(100, 999)}",
        ]
    )


def bad_card(rng: Rng) -> str:
    payload = rng.choice("3456") + _alnum(rng, 14)
    valid = luhn_complete(payload)
    wrong = str((int(valid[-1]) + rng.randint(1, 9)) % 10)
    return format_card(rng, payload + wrong)


def bad_iban(rng: Rng) -> str:
    compact = _compact_iban(rng)
    # Check digits run 02..98; any other value in that range shifts the mod-97 remainder by a
    # nonzero amount below 97, so the result always fails validation.
    wrong = (int(compact[2:4]) - 2 + rng.randint(1, 96)) % 97 + 2
    return _format_iban(rng, f"{compact[:2]}{wrong:02d}{compact[4:]}")


def bad_ssn(rng: Rng) -> str:
    area, group, serial = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
    which = rng.randrange(5)
    area = [0, 666, rng.randint(900, 999), area, area][which]
    group = 0 if which == 3 else group
    serial = 0 if which == 4 else serial
    return f"{area:03d}-{group:02d}-{serial:04d}"


def time_of_day(rng: Rng) -> str:
    h, m = rng.randint(0, 23), rng.randint(0, 59)
    seconds = rng.randint(0, 59)
    return rng.choice(
        [f"{h:02d}:{m:02d}", f"{h}:{m:02d}:{seconds:02d}", f"{h % 12 + 1}:{m:02d} pm"]
    )


def version(rng: Rng) -> str:
    a, b, c = rng.randint(0, 12), rng.randint(0, 30), rng.randint(0, 200)
    return rng.choice([f"v{a}.{b}.{c}", f"{a}.{b}.{c}", f"v{a}.{b}.{c}.{rng.randint(1, 9)}-beta"])


def tracking_code(rng: Rng) -> str:
    usps = "9400" + _alnum(rng, 18)
    return rng.choice(
        [
            "1Z" + _alnum(rng, 6, _UPPER_DIGITS) + _alnum(rng, 10),
            " ".join(usps[i : i + 4] for i in range(0, 22, 4)),
            "JD" + _alnum(rng, 18),
            f"7{_alnum(rng, 3)} {_alnum(rng, 4)} {_alnum(rng, 4)}",
            "LX" + _alnum(rng, 9) + "CN",
        ]
    )


def percent(rng: Rng) -> str:
    return rng.choice([f"{rng.randint(1, 99)}%", f"{rng.randint(0, 20)}.{rng.randint(0, 99)}%"])


def postcode(rng: Rng) -> str:
    us_zip, indian_pin = f"{rng.randint(10000, 99999)}", f"{rng.randint(110001, 855999)}"
    fixed = ["SW1A 1AA", "EC1A 1BB", "M5V 3L9", "75008", "10115", "2000"]
    return rng.choice([*fixed, us_zip, indian_pin])


def bad_ip(rng: Rng) -> str:
    octets = [str(rng.randint(0, 255)) for _ in range(4)]
    octets[rng.randrange(4)] = str(rng.randint(256, 999))
    return rng.choice([".".join(octets), ".".join(octets[:3])])


GENERATORS: dict[str, Callable[[Rng], str]] = {
    "EMAIL": email,
    "PHONE": phone,
    "CREDIT_CARD": card,
    "IBAN": iban,
    "US_SSN": ssn,
    "IP_ADDRESS": ip_address,
    "ORDER": order_number,
    "DATE": date,
    "AMOUNT": amount,
    "BAD_CARD": bad_card,
    "BAD_IBAN": bad_iban,
    "BAD_SSN": bad_ssn,
    "TIME": time_of_day,
    "VERSION": version,
    "TRACKING": tracking_code,
    "PERCENT": percent,
    "POSTCODE": postcode,
    "BAD_IP": bad_ip,
}

# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

PII_TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMAIL": (
        "Please send the statement to {EMAIL} instead of my work address.",
        "My email is {EMAIL}, can you confirm you have it on file?",
        "I changed my login from {EMAIL} to {EMAIL} last week.",
        "cc {EMAIL} on the reply (she handles our billing).",
        "Contact: {EMAIL}",
    ),
    "PHONE": (
        "You can call me at {PHONE} after 5pm.",
        "My new number is {PHONE}.",
        "Tel: {PHONE}, ask for the fraud team.",
        "Please update my mobile to {PHONE} (the old one was stolen).",
        "I tried calling {PHONE} twice but nobody answered",
        "Reach my husband on {PHONE} or me on {PHONE}.",
    ),
    "CREDIT_CARD": (
        "The charge on card {CREDIT_CARD} is not mine.",
        "I paid with {CREDIT_CARD} but the booking still shows unpaid.",
        "Card number: {CREDIT_CARD}, expiry next year.",
        "Please block {CREDIT_CARD} immediately, I lost my wallet.",
    ),
    "IBAN": (
        "Please refund the money to IBAN {IBAN}.",
        "My salary goes to {IBAN}, why was the transfer returned?",
        "Beneficiary account: {IBAN} (joint account).",
        "I set up a standing order from {IBAN} but it never ran.",
    ),
    "US_SSN": (
        "For verification my SSN is {US_SSN}.",
        "The form asked for my social security number so I wrote {US_SSN}.",
        "SSN: {US_SSN}; date of birth on file.",
        "My daughter's SSN {US_SSN} was entered on the wrong account.",
        "ssn#{US_SSN} (from the tax form)",
        "Social security no. {US_SSN} belongs to my late father.",
        "SS# {US_SSN} is on the W-2 they sent.",
    ),
    "IP_ADDRESS": (
        "The login came from {IP_ADDRESS}, which is not my network.",
        "Our firewall blocks {IP_ADDRESS} and the app stopped syncing.",
        "Server address: {IP_ADDRESS}, port 443.",
        "I only ever connect from [{IP_ADDRESS}] or {IP_ADDRESS}.",
        "Suspicious sessions from {IP_ADDRESS}: please check.",
    ),
}

MIXED_TEMPLATES: tuple[str, ...] = (
    "Hi, I'm writing from {EMAIL}; my phone is {PHONE} if you need it.",
    "The transfer to {IBAN} of {AMOUNT} on {DATE} never arrived.",
    "Card {CREDIT_CARD} was charged {AMOUNT} for order {ORDER} on {DATE}.",
    "At {TIME} someone at {IP_ADDRESS} changed my email to {EMAIL}.",
    "SSN {US_SSN}, phone {PHONE}, account opened {DATE}.",
)

DECOY_TEMPLATES: tuple[str, ...] = (
    "Your order {ORDER} shipped on {DATE} via tracking {TRACKING}.",
    "We refunded {AMOUNT} on {DATE} at {TIME}.",
    "The card number I typed, {BAD_CARD}, was rejected as invalid.",
    "The IBAN {BAD_IBAN} from the invoice fails validation.",
    "The test record uses {BAD_SSN} as a placeholder.",
    "Interest went up by {PERCENT} after {DATE}.",
    "The app ({VERSION}) crashes since {DATE} at {TIME}.",
    "Deliver to postcode {POSTCODE} before {TIME}, please.",
    "The log shows {BAD_IP}, which cannot be right.",
    "Order {ORDER} for {AMOUNT} was cancelled.",
    "Parcel {TRACKING} is stuck; it left on {DATE}.",
    "I was charged {AMOUNT} instead of {AMOUNT} ({PERCENT} too much).",
    "Version {VERSION} fixed it but {VERSION} broke it again.",
    "Ticket opened {DATE}, reference order {ORDER}.",
    "Sample number {BAD_CARD} and sample IBAN {BAD_IBAN} are from the manual.",
    "Dummy SSN {BAD_SSN}, dummy card {BAD_CARD}, updated at {TIME}.",
)

# The harder forms each PII slot may carry, as named in ``GoldSpan.form``.
FORM_NAMES: dict[str, tuple[str, ...]] = {
    "EMAIL": (
        "idn_domain", "unicode_local", "punycode", "localhost", "quoted", "at_paren", "at_bracket",
    ),
    "PHONE": tuple(_NATIONAL_WITHOUT_TRUNK),
    "US_SSN": ("bare",),
}  # fmt: skip
# PII slots whose values come in named forms; the other slots use ``GENERATORS`` (form "").
FORMS: dict[str, Callable[[Rng], tuple[str, str]]] = {
    "EMAIL": email_form,
    "PHONE": phone_form,
    "US_SSN": ssn_form,
}

_SLOT_RE = re.compile(r"\{([A-Z_]+)\}")


def fill(rng: Rng, template: str) -> tuple[str, list[GoldSpan]]:
    """Fill every ``{SLOT}`` of ``template``, returning the text and one span per slot."""
    pieces = _SLOT_RE.split(template)
    out, spans, cursor = [], [], 0
    for index, piece in enumerate(pieces):
        if index % 2 == 1:
            value, form = FORMS[piece](rng) if piece in FORMS else (GENERATORS[piece](rng), "")
            spans.append(GoldSpan(piece, cursor, cursor + len(value), form))
            piece = value
        out.append(piece)
        cursor += len(piece)
    return "".join(out), spans


def _sample(rng: Rng, templates: list[str]) -> Sample:
    text = ""
    pii: list[GoldSpan] = []
    decoys: list[GoldSpan] = []
    for template in templates:
        if text:
            text += " "
        part, spans = fill(rng, template)
        for span in spans:
            shifted = GoldSpan(span.kind, span.start + len(text), span.end + len(text), span.form)
            (pii if span.kind in PII_SLOTS else decoys).append(shifted)
        text += part
    return Sample(text, tuple(pii), tuple(decoys))


def generate(seed: int = 13616, n_texts: int = 1000) -> list[Sample]:
    """``n_texts`` messages: one PII sentence each (types in turn), decoy and mixed sentences."""
    rng = random.Random(seed)
    samples = []
    for index in range(n_texts):
        kind = PII_SLOTS[index % len(PII_SLOTS)]
        templates = [rng.choice(PII_TEMPLATES[kind])]
        templates += rng.sample(DECOY_TEMPLATES, rng.randint(1, 2))
        if rng.random() < 0.2:
            templates.append(rng.choice(MIXED_TEMPLATES))
        rng.shuffle(templates)
        samples.append(_sample(rng, templates))
    return samples
