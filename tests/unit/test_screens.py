"""User text on screens (rich): never markup, never a control character (gremio.safetext).

The live board, `gremio watch`, `gremio applications`, `gremio members` and
`gremio deadletter` are rendered into a rich Console writing to a string, and the literal
text is checked.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from consumers.locations.board import render as render_board
from consumers.watch import render_orders
from gremio import deadletter as dl
from gremio import topics as t
from gremio.members_cli import applications_table, members_table
from gremio.safetext import REPLACEMENT, csv_cell, mask_rut, printable, screen

TZ = "America/Santiago"
SCL = ZoneInfo(TZ)
AT = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
MARKUP = ["[/b]", "[bold red]x", "[link=http://evil.example]clic[/link]", "\\[b]esc"]


def rendered(renderable, width: int = 250) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def assert_clean(text: str) -> None:
    """Nothing that moves the cursor, recolours or reorders: only newlines between lines."""
    assert not any(ord(ch) < 0x20 and ch != "\n" for ch in text), repr(text)
    assert "\x7f" not in text and "\u202e" not in text and "\u2028" not in text


# --- the helpers ------------------------------------------------------------------------------------


def test_printable_replaces_one_for_one_what_could_break_a_screen_or_a_file():
    hostile = "a\x1b[2Jb\nc\td\re\x00f\u202eg\u200bh\u2028i\ud800j\x7fk"
    assert printable(hostile) == "a\ufffd[2Jb\ufffdc\ufffdd\ufffde\ufffdf\ufffdg\ufffdh\ufffdi\ufffdj\ufffdk"
    assert len(printable(hostile)) == len(hostile)
    assert printable(hostile, escape=True) == (
        "a\\x1b[2Jb\\nc\\td\\re\\x00f\\u202eg\\u200bh\\u2028i\\ud800j\\x7fk"
    )


def test_printable_leaves_ordinary_text_alone():
    for text in ("Juana Pérez", "Ñuñoa\u00a0centro", "sopaipillas 🥟", "María-José [b]", ""):
        assert printable(text) == text
    assert printable(None) == ""
    assert printable(12) == "12"


def test_screen_is_a_text_not_markup():
    cell = screen("[bold red]x\x1b", style="red")
    assert cell.plain == "[bold red]x" + REPLACEMENT
    assert str(cell.style) == "red"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("ana", "ana"),
        ("a=b", "a=b"),
        ("", ""),
        ("x\ud800", "x\ufffd"),
    ],
)
def test_csv_cell_neutralizes_formulas_owasp(cell, expected):
    assert csv_cell(cell) == expected


@pytest.mark.parametrize(
    ("rut", "masked"),
    [
        ("12345678-5", "12.3**.***-5"),
        ("12.345.678-5", "12.3**.***-5"),
        ("7654321-6", "7.6**.***-6"),
        ("20123456-k", "20.1**.***-K"),
        ("123456-0", "1**.***-0"),
        ("1-9", "*-9"),
        ("not a rut", "***"),
        ("", "***"),
        (None, "***"),
    ],
)
def test_mask_rut_shows_at_most_the_first_digits_and_the_check_digit(rut, masked):
    assert mask_rut(rut) == masked


# --- the live board and `gremio watch` ------------------------------------------------------------------


def snapshot(text: str) -> dict:
    return {
        "carts": [
            {
                "plate": text,
                "master": text,
                "registered": True,
                "lat": -33.45,
                "lon": -70.66,
                "seconds_since_seen": 3,
                "speed_kmh": 4.0,
            }
        ],
        "reports": [
            {
                "received_at": AT.isoformat(),
                "lat": -33.45,
                "lon": -70.66,
                "nearest_plate": text,
                "nearest_distance_m": 12.0,
                "plate": text,
                "description": text,
            }
        ],
        "alerts": [{"created_at": AT.isoformat(), "kind": "fugitive_report", "plate": text, "detail": text}],
    }


@pytest.mark.parametrize("text", MARKUP)
def test_the_board_shows_markup_literally(text):
    out = rendered(render_board(snapshot(text), SCL))
    # plate, master, nearest plate, reported plate, description, alert plate, detail
    assert out.count(text) >= 7, out


def test_the_board_keeps_control_characters_out_of_its_layout():
    out = rendered(render_board(snapshot("Ana\x1b[2J\nfila\u202e"), SCL))
    assert_clean(out)
    assert "Ana\ufffd[2J\ufffdfila\ufffd" in out
    narrow = rendered(render_board(snapshot("ok"), SCL))
    assert len(out.splitlines()) == len(narrow.splitlines())


def test_watch_orders_escape_the_plate():
    orders = [
        {
            "created_at": AT,
            "plate": "[bold red]x\x1b",
            "stock_at_trigger": 12,
            "quantity": 90,
            "status": "open",
        }
    ]
    out = rendered(render_orders(orders, SCL))
    assert "[bold red]x\ufffd" in out
    assert_clean(out)


# --- `gremio applications` and `gremio members` -------------------------------------------------------


def application(*values) -> dict:
    """A row of `members_applications_list`, by name as the command reads it."""
    return dict(
        zip(
            ("received_at", "premium", "rut", "name", "plate", "status", "reason", "decided_at"),
            values,
            strict=True,
        )
    )


def member(*values) -> dict:
    """A row of `members_list`, by name."""
    return dict(zip(("approved_at", "rut", "name", "plate", "premium", "email"), values, strict=True))


@pytest.mark.parametrize("text", MARKUP)
def test_applications_show_markup_literally(text):
    rows = [application(AT, True, "12345678-5", text, "BBCL12", "rejected", text, AT + timedelta(minutes=1))]
    out = rendered(applications_table(rows, TZ))
    assert out.count(text) == 2, out
    assert "rejected" in out and "premium" in out


def test_applications_keep_control_characters_out():
    rows = [application(AT, False, "12345678-5", "Ana\x1b[31m\r\nX", "BBCL12", "pending", None, None)]
    out = rendered(applications_table(rows, TZ, "Applications, pending"))
    assert_clean(out)
    assert "Ana\ufffd[31m\ufffd\ufffdX" in out
    assert "Applications, pending (1; times in America/Santiago)" in out


@pytest.mark.parametrize("text", MARKUP)
def test_members_show_markup_literally(text):
    rows = [member(AT, "12345678-5", text, "BBCL12", False, f"{text}@example.cl")]
    out = rendered(members_table(rows, TZ))
    assert out.count(text) == 2, out
    assert "Members (1, 0 premium" in out


def test_members_keep_control_characters_out():
    rows = [member(AT, "12345678-5", "Luis\x07\x1b]0;title\x07", "BBCL12", True, "a@b.cl")]
    out = rendered(members_table(rows, TZ))
    assert_clean(out)


# --- `gremio deadletter` -----------------------------------------------------------------------------------


def letter(value: bytes = b"{}", error: str = "bad", **changes) -> dl.DeadLetter:
    headers = (
        ("type", b"Sale"),
        ("trace", b"\x00\xff"),
        (t.DLQ_SOURCE_TOPIC, b"sales"),
        (t.DLQ_SOURCE_PARTITION, b"2"),
        (t.DLQ_SOURCE_OFFSET, b"17"),
        (t.DLQ_ERROR, error.encode()),
    )
    fields = {
        "partition": 1,
        "offset": 42,
        "timestamp": AT,
        "key": b"BBCL12",
        "value": value,
        "headers": headers,
    }
    return dl.DeadLetter(**{**fields, **changes})


def test_a_dead_letter_knows_its_source_its_original_headers_and_its_record_id():
    ident = str(uuid.uuid4())
    d = letter(f'{{"id": "{ident}"}}'.encode())
    assert d.handle == "1@42"
    assert d.source == ("sales", 2, 17)
    assert d.error == "bad"
    assert d.original_headers == [("type", b"Sale"), ("trace", b"\x00\xff")]
    assert d.record_id == ident
    assert letter(b"\xff").record_id is None
    assert letter(b"[1]").record_id is None
    assert letter(headers=(("type", b"Sale"),)).source is None


def test_a_dead_letters_own_error_header_is_kept_on_replay():
    """deadletter_headers appends its four after the original ones: only those are dropped."""
    d = letter(headers=(("error", b"theirs"), (t.DLQ_SOURCE_TOPIC, b"sales"), (t.DLQ_ERROR, b"ours")))
    assert d.error == "ours"
    assert d.original_headers == [("error", b"theirs")]


def test_handles_and_times_parse():
    assert dl.parse_handle("1@42") == (1, 42)
    assert dl.parse_handle(" 0 @ 7 ") == (0, 7)
    for bad in ("1", "a@b", "1@-2", "@3"):
        with pytest.raises(dl.DeadLetterError):
            dl.parse_handle(bad)
    assert dl.parse_since("2h", now=AT) == AT - timedelta(hours=2)
    assert dl.parse_since("30m", now=AT) == AT - timedelta(minutes=30)
    assert dl.parse_since("2026-11-28T09:00-03:00") == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    with pytest.raises(dl.DeadLetterError):
        dl.parse_since("yesterday")
    assert [dl.format_age(timedelta(seconds=s)) for s in (5, 125, 7300, 200000)] == ["5s", "2m", "2h", "2d"]


@pytest.mark.parametrize("text", MARKUP)
def test_the_dead_letter_list_shows_the_reason_literally_and_no_payload(text):
    out = rendered(
        dl.list_table([letter(b'{"name": "Juana P\\u00e9rez"}', error=text)], now=AT + timedelta(minutes=3))
    )
    assert text in out
    assert "1@42" in out and "sales" in out and "17" in out and "3m" in out
    assert "Juana" not in out and "BBCL12" not in out


def test_the_dead_letter_list_keeps_control_characters_out():
    out = rendered(dl.list_table([letter(error="boom\x1b[2J\nsecond line")]))
    assert_clean(out)
    assert "boom\ufffd[2J\ufffdsecond line" in out


def show(d: dl.DeadLetter, max_bytes: int = dl.SHOW_MAX_BYTES) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    for line in dl.show_lines(d, max_bytes, now=AT):
        console.print(line, soft_wrap=True)
    return console.file.getvalue()


def test_show_prints_headers_and_value_escaped():
    out = show(letter(b'{"id": "x", "note": "[bold red]hi\\u001b[0m"}', error="[/b] \x1b"))
    assert_clean(out)
    assert "dead letter 1@42 (deadletter partition 1, offset 42)" in out
    assert "source: sales partition 2 offset 17" in out
    assert "error: [/b] \\x1b" in out
    assert "key: BBCL12" in out
    assert "trace: \\x00\\xff" in out
    assert '"note": "[bold red]hi\\u001b[0m"' in out  # JSON escapes it itself


def test_show_prints_non_utf8_values_safely_and_truncates_big_ones():
    out = show(letter(b"\xff\xfeabc\x1b[2J\nline two"))
    assert_clean(out)
    assert "\\xff\\xfeabc\\x1b[2J" in out
    assert "line two" in out
    big = show(letter(b"x" * 10_000), max_bytes=100)
    assert "x" * 100 in big and "x" * 101 not in big
    assert "9900 more bytes not shown (of 10000)" in big
