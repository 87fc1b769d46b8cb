"""Logging set-up shared by every gremio process, with personal data kept out of the lines."""

from __future__ import annotations

import logging
import re
import sys

# Applicants' RUTs (12.345.678-5, 12345678-5, 12345678-K) and e-mail addresses. Code logs a
# masked RUT or an application id on purpose (gremio.safetext.mask_rut); this filter is the
# net under it, for text that carries a record's values by accident (a driver's error message,
# a third party's line). Names cannot be recognised by a pattern: no code logs them.
_RUT = re.compile(r"(?<![\w.])\d{1,2}(?:\.?\d{3}){2}-[\dkK](?![\w])")
_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")


def redact_personal_data(text: str) -> str:
    """`text` with every RUT and e-mail address replaced by a mask."""
    from gremio.safetext import mask_rut

    text = _EMAIL.sub("<email>", text)
    return _RUT.sub(lambda m: mask_rut(m.group(0)), text)


class PersonalDataFilter(logging.Filter):
    """Masks RUTs and e-mail addresses in a record's message and arguments (and its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_personal_data(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_personal_data(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Plain, timestamped log lines on stderr (the process manager keeps them in a file)."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, PersonalDataFilter) for f in handler.filters):
            handler.addFilter(PersonalDataFilter())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
