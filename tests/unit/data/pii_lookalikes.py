"""Seeded generator of clean lines that look like PII and are not.

Each line holds exactly one look-alike of a named kind (version strings, scope paths in code,
timestamps, MAC-shaped strings, section numbers, dates, order numbers, amounts, tracking codes,
postcodes, decimals, ratios, "@" that is not an address...) inside an ordinary sentence. None of
them may be reported by ``adaptlab.data.pii.detect``. Values are generated, never real data.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

Rng = random.Random


@dataclass(frozen=True)
class Lookalike:
    """One clean line and the kind of look-alike it carries."""

    kind: str
    text: str


def _quad(rng: Rng) -> str:
    return ".".join(str(rng.randint(0, 20)) for _ in range(4))


def _semver(rng: Rng) -> str:
    return f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}"


_VERSION_WORDS = (
    "version", "Version", "ver.", "v", "build", "Build", "release", "firmware", "rev",
    "revision", "update", "patch", "upgraded to", "hotfix", "kernel", "driver",
)  # fmt: skip


def version_with_word(rng: Rng) -> str:
    word, value = rng.choice(_VERSION_WORDS), _quad(rng)
    return rng.choice(
        [
            f"{word} {value}",
            f"{word} {value} of the app",
            f"{word}: {value}",
            f"{word} is {value}",
            f"{word} number {value}",
        ]
    )


def version_glued(rng: Rng) -> str:
    value = _quad(rng)
    return rng.choice(
        [
            f"v{value}",
            f"V{value}",
            f"{value}-beta",
            f"{value}-rc{rng.randint(1, 5)}",
            f"{value}+build{rng.randint(1, 999)}",
            f"v{_semver(rng)}",
            f"{_semver(rng)}-alpha.{rng.randint(1, 9)}",
        ]
    )


def semver(rng: Rng) -> str:
    value = _semver(rng)
    return rng.choice([value, f"^{value}", f"~={value}", f">={value},<{rng.randint(13, 20)}"])


_SECTION_WORDS = ("section", "Section", "§", "clause", "chapter", "paragraph", "Table", "Figure")


def section_number(rng: Rng) -> str:
    return f"{rng.choice(_SECTION_WORDS)} {_quad(rng).replace('0', '1')}"


_SCOPES = (
    "Face::Add", "a::b", "Bad::Cafe", "dead::beef", "std::vector<int>", "Foo::Bar::baz()",
    "Foo::bar::baz", "Add::new()", "Cafe::Bead", "std::map<K, V>", "crate::Deed", "Ab::Cd",
    "self::Fee", "Db::Add", "e::f", "Ad::Fade", "f32::EPSILON", "u8::MAX", "Self::Be",
    "parent::Ace", "$this->Face::Add()", "obj->a::b", "Bead::Fade::Cab", "Cab::Dab",
)  # fmt: skip


def scope_path(rng: Rng) -> str:
    return rng.choice(_SCOPES)


def timestamp(rng: Rng) -> str:
    h, m, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice(
        [
            f"{h:02d}:{m:02d}:{s:02d}",
            f"{h:02d}:{m:02d}:{s:02d}.{rng.randint(0, 999):03d}",
            f"{h}:{m:02d}:{s:02d} UTC",
            f"{rng.randint(0, 9):02d}:{h:02d}:{m:02d}:{s:02d}",
        ]
    )


def _hex_pairs(rng: Rng, n: int) -> list[str]:
    return [f"{rng.randint(0, 255):02X}" for _ in range(n)]


def mac_like(rng: Rng) -> str:
    pairs = _hex_pairs(rng, 6)
    return rng.choice(
        [
            ":".join(pairs),
            "-".join(pairs),
            ":".join(pairs[:5]),
            ".".join("".join(pairs[i : i + 2]).lower() for i in range(0, 6, 2)),
            ":".join(_hex_pairs(rng, 7)),
        ]
    )


def date(rng: Rng) -> str:
    y, m, d = rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{d:02d}.{m:02d}.{y}", f"{m}/{d}/{y}"]
    )


def order_number(rng: Rng) -> str:
    return rng.choice(
        [
            f"#{rng.randint(100, 999)}-{rng.randint(1000000, 9999999)}",
            f"order {rng.randint(100000000, 999999999)}",
            f"ORD-{rng.randint(2019, 2025)}-{rng.randint(100000, 999999)}",
            f"invoice no. {rng.randint(612000000, 699999999)}",
            f"ticket #{rng.randint(13000000000, 19999999999)}",
        ]
    )


def amount(rng: Rng) -> str:
    whole, cents = rng.randint(1, 999999), rng.randint(0, 99)
    return rng.choice(
        [
            f"${whole:,}.{cents:02d}",
            f"{whole:,}.{cents:02d}".replace(",", " ").replace(".", ",") + " EUR",
            f"€{whole:,}".replace(",", ".") + f",{cents:02d}",
            f"R$ {whole:,}".replace(",", ".") + f",{cents:02d}",
            f"¥{rng.randint(100000, 99999999)}",
        ]
    )


def tracking_code(rng: Rng) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(18))
    usps = "9400" + digits
    return rng.choice(
        [
            "1Z" + "".join(rng.choice(string.ascii_uppercase) for _ in range(6)) + digits[:10],
            " ".join(usps[i : i + 4] for i in range(0, 22, 4)),
            "JD" + digits,
            "LX" + digits[:9] + "CN",
        ]
    )


def postcode(rng: Rng) -> str:
    return rng.choice(
        [
            f"{rng.randint(10000, 99999)}",
            f"{rng.randint(10000, 99999)}-{rng.randint(100, 999)}",
            f"{rng.randint(100, 999)} {rng.randint(10, 99)}",
            "SW1A 1AA",
            f"{rng.randint(100000, 855999)}",
        ]
    )


def decimal(rng: Rng) -> str:
    return rng.choice(
        [
            f"{rng.randint(0, 999)}.{rng.randint(0, 99999)}",
            f"{rng.randint(1, 9)}.{rng.randint(10, 99)}e-{rng.randint(2, 9)}",
            f"{rng.randint(1000, 99999):,}.{rng.randint(0, 99):02d}",
            f"{rng.randint(1, 99)}%",
            f"{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        ]
    )


def ratio(rng: Rng) -> str:
    return rng.choice(
        [
            f"{rng.randint(1, 21)}:{rng.randint(1, 9)}",
            f"John {rng.randint(1, 21)}:{rng.randint(1, 40)}",
            f"localhost:{rng.randint(1024, 65535)}",
            f"{rng.randint(1, 9)}:{rng.randint(1, 9)}:{rng.randint(1, 9)}",
        ]
    )


def not_an_email(rng: Rng) -> str:
    name = rng.choice(["anna", "omar", "li", "team", "devops"])
    return rng.choice(
        [
            f"@{name}",
            f"{name} @ the front desk",
            f"meet {name} at example.com's booth",
            f"{name} (at) the office",
            f"{name}[at]home",
            f"{name}@",
            f"{rng.randint(2, 9)} @ ${rng.randint(1, 99)}.{rng.randint(0, 99):02d}",
            f'he wrote "{name}" @ noon',
        ]
    )


def bare_number(rng: Rng) -> str:
    # Shapes near the national phone formats: right digit count, not valid or not phone-like.
    return rng.choice(
        [
            f"{rng.randint(10, 99)} {rng.randint(10000, 99999)}",
            f"{rng.randint(100, 599)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            f"{rng.randint(100000000, 999999999)} bytes",
            f"{rng.randint(1000000000, 1799999999)}",
            f"{rng.randint(100, 999)}-{rng.randint(10, 99)}",
        ]
    )


GENERATORS: dict[str, Callable[[Rng], str]] = {
    "VERSION_WORD": version_with_word,
    "VERSION_GLUED": version_glued,
    "SEMVER": semver,
    "SECTION": section_number,
    "SCOPE": scope_path,
    "TIMESTAMP": timestamp,
    "MAC_LIKE": mac_like,
    "DATE": date,
    "ORDER": order_number,
    "AMOUNT": amount,
    "TRACKING": tracking_code,
    "POSTCODE": postcode,
    "DECIMAL": decimal,
    "RATIO": ratio,
    "NOT_EMAIL": not_an_email,
    "BARE_NUMBER": bare_number,
}

_TEMPLATES = (
    "See {} for details.",
    "The log line mentions {} twice.",
    "{} is what the ticket says.",
    "After the upgrade we noticed {} in the output",
    "Customer quoted {}; please check.",
    "Ref: {}",
    "I think it was {} but I'm not sure.",
)


def generate(seed: int = 2024, n_lines: int = 800) -> list[Lookalike]:
    """``n_lines`` clean lines, kinds in turn, each in a randomly chosen sentence."""
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    lines = []
    for index in range(n_lines):
        kind = kinds[index % len(kinds)]
        lines.append(Lookalike(kind, rng.choice(_TEMPLATES).format(GENERATORS[kind](rng))))
    return lines
