"""English text normalisation for speech: what a reader would say for the written forms.

    normalise("Dr. Smith paid $3.50 at 9:05 pm on 2026-12-01, 25% more than the 2nd time.")
    -> "doctor smith paid three dollars fifty at nine oh five p m on december first twenty twenty six,
        twenty five percent more than the second time."

Numbers (cardinal, decimal, negative, with thousands separators), ordinals (1st, 22nd), years
(four digits in a date, or 1100-2099 standing alone), times (9:05, 14:30, am/pm), ISO and US
dates, currency ($, EUR, GBP, JPY with cents), percentages, common abbreviations and symbols.
Lower-cased on the way out; punctuation kept for the phonemiser's pauses.
"""
from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_MONTHS = ("january february march april may june july august september october november december").split()
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "ms.": "miz", "dr.": "doctor", "st.": "saint", "prof.": "professor",
                  "jr.": "junior", "sr.": "senior", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
                  "i.e.": "that is", "no.": "number", "approx.": "approximately", "dept.": "department",
                  "mt.": "mount", "ave.": "avenue", "km": "kilometres", "kg": "kilograms", "cm": "centimetres",
                  "mm": "millimetres", "ml": "millilitres"}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals ", "#": " number ",
            "°": " degrees ", "×": " times ", "/": " slash ", "*": " ", "_": " ", "~": " about "}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", "")}


def cardinal(n: int) -> str:
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    for scale, word in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return cardinal(head) + " " + word + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError(n)


def ordinal(n: int) -> str:
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int) -> str:
    if 2000 <= n <= 2009:
        return cardinal(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return cardinal(head) + " hundred"
    return cardinal(head) + " " + (("oh " + _ONES[tail]) if tail < 10 else cardinal(tail))


def digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def number(s: str) -> str:
    """'1,234.5' -> 'one thousand two hundred thirty four point five'."""
    s = s.replace(",", "")
    neg = s.startswith("-")
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    if len(whole) > 15:                     # beyond trillions: read the digits
        out = digits(whole)
    else:
        out = cardinal(int(whole or 0))
    if frac:
        out += " point " + digits(frac)
    return ("minus " if neg else "") + out


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group("cur")]
    whole = int(m.group("whole").replace(",", ""))
    cents = m.group("cents")
    out = f"{cardinal(whole)} {one if whole == 1 else many}"
    if m.group("scale"):
        return f"{number(m.group('whole') + ('.' + cents if cents else ''))} {m.group('scale').lower()} {many}"
    if cents and int(cents) and sub_one:
        c = int(cents.ljust(2, "0")[:2])
        out += f" {cardinal(c)}" if not sub_many else f" {cardinal(c)} {sub_one if c == 1 else sub_many}"
    return out


def _time(m: re.Match) -> str:
    h, mi = int(m.group("h")), int(m.group("m"))
    if h > 23 or mi > 59:
        return m.group(0)
    words = cardinal(h) + (" o'clock" if mi == 0 and not m.group("ampm") else
                           "" if mi == 0 else " oh " + _ONES[mi] if mi < 10 else " " + cardinal(mi))
    if m.group("ampm"):
        words += " " + " ".join(m.group("ampm").lower().replace(".", ""))
    return words


def _date_iso(m: re.Match) -> str:
    y, mo, d = int(m.group("y")), int(m.group("mo")), int(m.group("d"))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {ordinal(d)} {year(y)}"


def _date_us(m: re.Match) -> str:
    mo, d, y = int(m.group("mo")), int(m.group("d")), int(m.group("y"))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {ordinal(d)} {year(y)}"


def _month_day(m: re.Match) -> str:
    d = int(m.group("d"))
    return f"{m.group('month')} {ordinal(d)}" if 1 <= d <= 31 else m.group(0)


_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\b(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})\b"), _date_iso),
    (re.compile(r"\b(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})\b"), _date_us),
    (re.compile(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})(?:\s*(?P<ampm>[ap]m\b|[ap]\.m\.))?(?![\w:])", re.I), _time),
    (re.compile(r"(?P<cur>[$€£¥])\s?(?P<whole>\d[\d,]*)(?:\.(?P<cents>\d{1,2}))?(?:\s?(?P<scale>million|billion|thousand))?\b",
                re.I), _money),
    (re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I), lambda m: ordinal(int(m.group(1)))),
    (re.compile(rf"\b(?P<month>{'|'.join(_MONTHS)})\s+(?P<d>\d{{1,2}})\b(?!:)", re.I), _month_day),
    (re.compile(r"(?<![\d.])(1[1-9]\d\d|20\d\d)(?!\d|[.,]\d|%|\s*percent)"), lambda m: year(int(m.group(1)))),
    (re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?"), lambda m: number(m.group(0))),
]


def normalise(text: str) -> str:
    """Written English -> what is said, lower case, punctuation kept."""
    s = text.replace("\u2019", "'").replace("\u2014", ", ").replace("\u2013", " to ")
    for pattern, repl in _RULES[:6]:
        s = pattern.sub(repl, s)
    for abbr, full in _ABBREVIATIONS.items():
        s = re.sub(rf"(?<![\w.]){re.escape(abbr)}(?!\w)", full, s, flags=re.I)
    for pattern, repl in _RULES[6:]:
        s = pattern.sub(repl, s)
    for sym, word in _SYMBOLS.items():
        s = s.replace(sym, word)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    return s.lower()
