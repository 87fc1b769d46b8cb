"""Personal data never reaches a log line: the redaction net under every gremio logger."""

from __future__ import annotations

import logging

import psycopg
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cl import rut as stdnum_rut

from gremio.failures import reason
from gremio.logs import PersonalDataFilter, redact_personal_data

RUTS = ["12.345.678-5", "12345678-5", "7654321-6", "20.111.222-K", "9876543-k"]
EMAILS = ["ana.rojas@example.cl", "x+tag@sub.domain.org", "o'brien%x@a-b.cl"]


def test_ruts_and_emails_are_masked_wherever_they_are_in_a_line():
    for rut in RUTS:
        line = redact_personal_data(f'invalid input syntax for type integer: "{rut}" (row {rut}).')
        assert rut not in line and rut.replace(".", "") not in line
        assert "-" in line  # masked, not dropped: 12.3**.***-5
    for email in EMAILS:
        line = redact_personal_data(f"to {email}, cc {email}")
        assert email not in line and line.count("<email>") == 2


def test_what_is_not_personal_data_is_left_alone():
    for line in [
        "drained in 1.2 s: p0 0→120, p1 3→4",
        "application 7f7c4d5e-0c3a-4a73-9b7e-8a0b1f6e2d11 (premium, RUT 12.3**.***-5): approved",
        "dead-lettered sales[3]@1024: DataError [22021]: invalid byte sequence",
        "2026-12-03T11:51:18-03:00 cart BBCL12 at -33.45,-70.66",
    ]:
        assert redact_personal_data(line) == line


@given(st.integers(min_value=1_000_000, max_value=99_999_999))
def test_every_valid_rut_spelling_is_masked(body):
    check = stdnum_rut.calc_check_digit(str(body))
    for spelled in (f"{body}-{check}", stdnum_rut.format(f"{body}{check}")):
        assert spelled not in redact_personal_data(f"rut={spelled};")


def test_the_filter_masks_messages_arguments_and_tracebacks(caplog):
    logger = logging.getLogger("gremio.test.pii")
    handler = caplog.handler
    handler.addFilter(PersonalDataFilter())
    try:
        with caplog.at_level(logging.INFO, logger="gremio.test.pii"):
            logger.info("applicant %s <%s>", "12.345.678-5", "ana.rojas@example.cl")
            try:
                raise ValueError("bad rut 12345678-5 for ana.rojas@example.cl")
            except ValueError:
                logger.exception("refused")
    finally:
        handler.removeFilter(handler.filters[-1])
    text = caplog.text
    assert "12.345.678-5" not in text and "12345678-5" not in text
    assert "ana.rojas@example.cl" not in text
    assert "<email>" in text and "refused" in text


def test_a_dead_letter_reason_carries_no_rut_or_email():
    exc = psycopg.errors.InvalidTextRepresentation(
        'invalid input syntax for type integer: "ana@example.cl 12345678-5"'
    )
    why = reason(exc)
    assert "ana@example.cl" not in why and "12345678-5" not in why
    assert why.startswith("InvalidTextRepresentation")
