"""Text that came from users, made safe for where it is shown (screens, report files, logs).

* `printable()`: control characters, invisible format characters (bidi overrides, zero-width
  marks), line/paragraph separators and lone surrogates become U+FFFD (or a visible escape,
  `\\x1b`, `\\u202e`), one code point for one, so a cell cannot move the cursor, recolour
  the terminal, reorder or break a line, and column widths stay what they were.
* `screen()`: a rich `Text` of `printable()` text. rich never parses a `Text` as markup,
  so a description of `[/b]` or `[bold red]x` shows literally.
* `csv_cell()`: the OWASP rule against spreadsheet formula injection: a text cell that
  begins with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`. Apply it
  to text cells only; numbers stay numbers.
* `mask_rut()`: a RUT for a log line, `12.3**.***-5`; personal data never reaches logs.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

REPLACEMENT = "\ufffd"
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _HIDDEN


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any, *, escape: bool = False) -> str:
    """`value` as text with nothing hidden in it: see the module's docstring.

    `escape=True` writes what was there instead of U+FFFD (`\\x1b`, `\\n`, `\\u202e`), for an
    operator who needs to know.
    """
    text = "" if value is None else str(value)
    if text.isprintable():  # fast path; it also refuses harmless spaces such as U+00A0
        return text
    if escape:
        return "".join(_escape(ch) if _hidden(ch) else ch for ch in text)
    return "".join(REPLACEMENT if _hidden(ch) else ch for ch in text)


def screen(value: Any, style: str = "", *, escape: bool = False) -> Text:
    """A table cell or line for rich: never markup, never a control character."""
    from rich.text import Text

    return Text(printable(value, escape=escape), style=style)


def csv_cell(value: Any) -> str:
    """A text cell for a CSV file, neutralized against formula injection (OWASP).

    Lone surrogates, which UTF-8 cannot encode, become U+FFFD; nothing else changes.
    """
    text = "" if value is None else str(value)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def mask_rut(rut: Any) -> str:
    """`12345678-5` → `12.3**.***-5`: only the first digits of a long body and the check digit.

    Bodies of 5 digits or fewer are masked entirely; anything that is not a RUT is `***`.
    """
    body, sep, check = str(rut or "").replace(".", "").strip().rpartition("-")
    if not sep or not body.isdigit() or len(check) != 1 or not body.isascii():
        return "***"
    keep = max(0, len(body) - 5)
    masked = body[:keep] + "*" * (len(body) - keep)
    groups = []
    while masked:
        groups.insert(0, masked[-3:])
        masked = masked[:-3]
    return f"{'.'.join(groups)}-{check.upper()}"
