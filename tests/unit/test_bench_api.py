"""bench.api's pure parts: reading wrk's output, the order of each round, the ratios."""

from __future__ import annotations

import json

import pytest

from bench import api

WRK_OUTPUT = """\
Running 8s test @ http://127.0.0.1:40001/v1/sales
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.01ms    3.20ms  61.05ms   90.10%
    Req/Sec     2.01k   150.00     2.30k    70.00%
  Latency Distribution
     50%    7.50ms
     75%    9.00ms
     90%   11.00ms
     99%    1.20s
  16080 requests in 8.00s, 3.10MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   2010.00
Transfer/sec:    396.00KB
"""


def test_parse_wrk_reads_throughput_percentiles_and_errors() -> None:
    found = api.parse_wrk(WRK_OUTPUT)
    assert found.rps == 2010.0
    assert found.p50_ms == 7.5
    assert found.p99_ms == 1200.0
    assert found.errors == 4 + 3


def test_parse_wrk_microseconds_and_no_errors() -> None:
    out = WRK_OUTPUT.replace("7.50ms", "750.00us").replace(
        "  Socket errors: connect 0, read 1, write 0, timeout 2\n", ""
    )
    found = api.parse_wrk(out.replace("  Non-2xx or 3xx responses: 4\n", ""))
    assert found.p50_ms == pytest.approx(0.75)
    assert found.errors == 0


def test_rotation_puts_each_server_first_in_turn() -> None:
    names = ["gremio", "a", "b"]
    orders = [api.rotation(names, round_) for round_ in range(4)]
    assert orders == [["gremio", "a", "b"], ["a", "b", "gremio"], ["b", "gremio", "a"], ["gremio", "a", "b"]]
    assert api.rotation(["gremio", "baseline"], 1) == ["baseline", "gremio"]  # alternating, as before


def _run(rps: float) -> api.Run:
    return api.Run(api.Result(rps, 1.0, 2.0, 0), 0.0, 0.0)


def test_ratios_are_medians_of_per_round_ratios() -> None:
    runs = {
        "gremio": [_run(100), _run(200), _run(300)],
        "node": [_run(100), _run(100), _run(600)],  # round ratios 1, 2, 0.5
        "seed": [_run(50), _run(50), _run(50)],  # 2, 4, 6
    }
    assert api.ratios(runs) == {"node": 1.0, "seed": 4.0}


def test_lua_script_posts_the_sale_with_a_cart_token(tmp_path) -> None:
    text = api.lua_script(tmp_path / "s.lua", api.sale(3), delay_ms=2.4).read_text()
    assert 'wrk.method = "POST"' in text
    assert "Bearer " in text
    body_line = next(line for line in text.splitlines() if line.startswith("wrk.body"))
    assert json.loads(json.loads(body_line.split("=", 1)[1]))["plate"] == api.PLATE
    assert "return 2" in text


def test_every_anchor_mode_is_one_the_server_knows() -> None:
    server = (api.ANCHOR_DIR / "server.js").read_text()
    lock = json.loads((api.ANCHOR_DIR / "package-lock.json").read_text())
    for mode, idempotent in api.ANCHORS.values():
        assert f'"{mode}"' in server
        assert idempotent in ("0", "1")
    assert (
        lock["packages"][""]["dependencies"]
        == json.loads((api.ANCHOR_DIR / "package.json").read_text())["dependencies"]
    )


def test_profile_categories_take_the_most_specific_match() -> None:
    from bench import profile_api as prof

    raw = (
        "run (gunicorn/workers/gthread.py:1);wsgi_app (flask/app.py:2);sell (ingest_api/sales.py:3);"
        "verify (gremio/tokens.py:4) 7\n"
        "run (gunicorn/workers/gthread.py:1);handle (gunicorn/workers/gthread.py:9) 3\n"
        "not a stack line\n"
    )
    stacks = prof.parse_raw(raw)
    assert sum(stacks.values()) == 10
    assert {prof.category(stack) for stack in stacks} == {
        "cart token check (gremio.tokens)",
        "gunicorn (HTTP parsing, socket, gthread)",
    }
    assert prof.category("main (somewhere.py:1)") == prof.OTHER
    assert prof.leaf("a (x.py:1);b (y.py:2)") == "b (y.py:2)"


def test_drain_profile_finds_the_consume_call_and_puts_decoding_before_the_loop() -> None:
    """The consume call is C: its samples end on read_chunk's line that calls it, which the
    categories find in the source (so moving the line cannot silently empty the category)."""
    from bench import profile_api as prof
    from bench import profile_drain

    found = profile_drain.categories()
    consume = dict(found)["consume: librdkafka fetch, Message objects"]
    assert consume and all(line.startswith("read_chunk (kafka_drain.py:") for line in consume)
    chunk = (
        "execute (kafka_drain.py:1);_Drain.drain_pass (kafka_drain.py:2);_Drain.read_chunk (kafka_drain.py:3)"
    )
    assert prof.category(
        chunk + ";_Drain.decode (kafka_drain.py:4);clean_text (gremio/records.py:5)", found
    ) == ("decode: pydantic validate_json, its Python validators")
    assert prof.category(chunk.replace(":3)", ":" + consume[0].rsplit(":", 1)[1]), found).startswith(
        "consume"
    )
    assert prof.category(chunk, found) == "chunk loop: offsets, pause, bookkeeping"
