"""`extract_receipt`: merchant, date (ISO), total and items from the text of a receipt.

Heuristics over lines, for the layouts receipts commonly have: a header (store name,
address, phone), item lines ending in a price ("BANANAS 1.99", "- Latte: $4.50",
"2 x Tea ...... 5.00"), then subtotal/tax/total lines and payment lines. Labelled
receipts ("Merchant: ...", "Date: ...", "Total: ...") work the same way.

The rules, so that task checkers can rely on them:
  * merchant: a "Merchant/Store/Vendor/Restaurant:" label, else the first header line that
    is not an address, phone, date, web address or a bare "RECEIPT" ("Welcome to X" -> X).
  * date: the first date in the text. Day/month order: a part > 12 decides; otherwise
    "/" means month first (US) and "." or "-" means day first. Two-digit years are 20YY.
  * total: the last line labelled grand total, else total / amount due / balance due
    (never subtotal or "total tax"); its last amount, or the next line's first amount.
  * items: lines before the first total line that end in a price and are not tax,
    discount, payment or change lines; the name drops bullets, quantities ("2 x", "x2",
    "@ 1.75") and dot leaders. A price is the line's last amount, a float with 2 decimals.
"""
from __future__ import annotations

import datetime as dt
import re

from inloop.services.contract.errors import ToolError

_CUR = r"[$€£¥]"
# An amount has exactly two decimals ("1,234.56", "3,20") or a currency sign ("$12").
_AMOUNT = re.compile(
    rf"(?<![\w.,])(?P<neg>-)?{_CUR}?\s?"
    rf"(?P<num>\d{{1,3}}(?:[,.]\d{{3}})*[.,]\d{{2}}|\d+[.,]\d{{2}}|(?<={_CUR})\d+|(?<={_CUR}\s)\d+)"
    r"(?![\d]|[.,]\d)")
_MONTHS = {m: i for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_MON = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATES = (
    re.compile(r"(?<!\d)(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<a>\d{1,2})(?P<sep>[/.\-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?!\d)"),
    re.compile(rf"(?<!\w)(?P<d>\d{{1,2}})(?:st|nd|rd|th)?[\s\-]+{_MON},?[\s\-]+(?P<y>\d{{4}}|\d{{2}})(?!\d)", re.I),
    re.compile(rf"(?<!\w){_MON}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})(?!\d)", re.I),
)
_LABEL = re.compile(r"^\s*(?:merchant|store|vendor|shop|seller|restaurant|business)\s*(?:name)?\s*[:\-]\s*(?P<v>.+)$", re.I)
_GRAND_TOTAL = re.compile(r"\bgrand\s*total\b", re.I)
_TOTAL = re.compile(r"\b(?:total|amount\s+due|balance\s+due|total\s+due|summe|gesamt|montant\s+total)\b", re.I)
_NOT_TOTAL = re.compile(r"sub\s*-?\s*total|total\s+(?:tax|vat|savings|discount|items?|qty|quantity)\b", re.I)
_NOT_ITEM = re.compile(
    r"\b(?:sub\s*-?\s*total|total|tax|vat|gst|hst|pst|mwst|ust|tip|gratuity|change|cash|card|visa|"
    r"mastercard|amex|debit|credit|balance|due|paid|payment|tender(?:ed)?|discount|coupon|savings|"
    r"rounding|service\s+charge|summe|gesamt|points|loyalty)\b", re.I)
_HEADER_SKIP = re.compile(
    r"^\s*(?:receipt|invoice|sales\s+receipt|tax\s+invoice|order\b|table\b|server\b|cashier\b|"
    r"tel\b|phone\b|fax\b|www\.|http)|\(\d{3}\)|\d{3}[-. ]\d{3}[-. ]\d{4}|@|\.com\b", re.I)
_ADDRESS = re.compile(r"^\s*\d+[a-z]?\s+\w+|\b\d{5}(?:-\d{4})?\s*$|\b(?:street|st\.|ave|avenue|road|rd\.|blvd|suite)\b", re.I)
_SPACES = re.compile(r"\s+")
_LEADERS = re.compile(r"\.{2,}")
_QTY = re.compile(r"^\s*\d+\s*[x×@]\s*|\s+[x×]\s*\d+\s*$|\s+\d+\s*@.*$|\s+@.*$|^\s*[x×]\s*\d+\s+", re.I)


def parse_amount(match: re.Match) -> float:
    num = match.group("num")
    if re.search(r"[.,]\d{2}$", num):  # the last separator is the decimal point
        whole, cents = num[:-3], num[-2:]
    else:
        whole, cents = num, "00"
    value = float(re.sub(r"[^\d]", "", whole) + "." + cents)
    return round(-value if match.group("neg") else value, 2)


def _year(y: str) -> int:
    return int(y) + 2000 if len(y) == 2 else int(y)


def _date_from(match: re.Match) -> dt.date | None:
    g = match.groupdict()
    try:
        if "mon" in g and g["mon"]:
            return dt.date(_year(g["y"]), _MONTHS[g["mon"][:3].lower()], int(g["d"]))
        if "a" in g:
            a, b = int(g["a"]), int(g["b"])
            day_first = a > 12 or (b <= 12 and g["sep"] in ".-")
            day, month = (a, b) if day_first else (b, a)
            return dt.date(_year(g["y"]), month, day)
        return dt.date(int(g["y"]), int(g["m"]), int(g["d"]))
    except ValueError:  # 2024-02-30 and friends are not dates
        return None


def find_date(text: str) -> str | None:
    found = []
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if (date := _date_from(m)) is not None:
                found.append((m.start(), date))
    return min(found)[1].isoformat() if found else None


_TRIM = frozenset("*=#~_-•·.:|")


def _clean(text: str) -> str:
    """Without leading and trailing whitespace and decoration. A scan from each end: a regex
    `[...]+$` retries at every position of a long run, which is quadratic in its length."""
    i, j = 0, len(text)
    while i < j and (text[i].isspace() or text[i] in _TRIM):
        i += 1
    while j > i and (text[j - 1].isspace() or text[j - 1] in _TRIM):
        j -= 1
    return text[i:j]


def find_merchant(lines: list[str]) -> str | None:
    for line in lines:
        if m := _LABEL.match(line):
            return _clean(m.group("v")) or None
    for line in lines:
        name = _clean(line)
        if len(re.findall(r"[^\W\d_]", name)) < 2:
            continue  # decoration, numbers only
        if _AMOUNT.search(name) or find_date(name) or _HEADER_SKIP.search(name) or _ADDRESS.search(name):
            continue
        name = re.sub(r"^(?:welcome\s+to|thank\s+you\s+for\s+shopping\s+at)\s+", "", name, flags=re.I)
        return _clean(name) or None
    return None


def _total_line(lines: list[str]) -> int | None:
    """Index of the line that states the total (grand total wins, then the last total)."""
    grand = [i for i, line in enumerate(lines) if _GRAND_TOTAL.search(line)]
    if grand:
        return grand[-1]
    plain = [i for i, line in enumerate(lines) if _TOTAL.search(line) and not _NOT_TOTAL.search(line)]
    return plain[-1] if plain else None


def find_total(lines: list[str]) -> float | None:
    i = _total_line(lines)
    if i is None:
        return None
    amounts = list(_AMOUNT.finditer(lines[i]))
    if amounts:
        return parse_amount(amounts[-1])
    for line in lines[i + 1:i + 3]:  # "TOTAL" on one line, "$5.92" on the next
        if m := _AMOUNT.search(line):
            return parse_amount(m)
    return None


def find_items(lines: list[str], merchant: str | None) -> list[dict]:
    stop = next((i for i, line in enumerate(lines) if _TOTAL.search(line) or _GRAND_TOTAL.search(line)),
                len(lines))
    items = []
    for line in lines[:stop]:
        amounts = list(_AMOUNT.finditer(line))
        if not amounts or _NOT_ITEM.search(line) or find_date(line):
            continue
        name = _AMOUNT.sub(" ", line[:amounts[-1].start()])
        # runs of whitespace become one space first: _QTY's `\s+...$` alternatives are
        # quadratic in the length of a run
        name = _clean(_QTY.sub("", _clean(_SPACES.sub(" ", _LEADERS.sub(" ", name)))))
        if len(re.findall(r"[^\W\d_]", name)) < 2 or name == merchant:
            continue
        items.append({"name": name, "price": parse_amount(amounts[-1])})
    return items


def extract_receipt(state, text: str) -> dict:
    """{merchant, date (YYYY-MM-DD), total, items: [{name, price}]}; unknown fields are null."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ToolError("extract_receipt needs the receipt's text (it was empty)")
    merchant = find_merchant(lines)
    return {"merchant": merchant, "date": find_date(text), "total": find_total(lines),
            "items": find_items(lines, merchant)}
