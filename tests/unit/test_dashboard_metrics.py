"""The Grafana dashboard and the Prometheus alert rules use only metrics that something exports.

deploy/grafana/dashboards/gremio.json and deploy/prometheus/rules.yml are PromQL that nothing
checks until a panel stays empty or an alert never fires. Here every metric name in them is
pulled out with a small PromQL tokenizer and looked up in what the services register in
prometheus_client's default REGISTRY (after importing every module that declares metrics),
plus what the Prometheus server itself makes (up, ALERTS, scrape_*) and the rules' own
recording rules.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/gremio.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/gremio.yaml"
RULES = ROOT / "deploy/prometheus/rules.yml"
DATASOURCE_UID = "prometheus"

# Every module that declares metrics at import time (the monitor exports the gremio_kafka_*,
# gremio_daily_report_*, gremio_airflow_* and gremio_ops_* families).
METRIC_MODULES = (
    "ingest_api.metrics",
    "ingest_api.ratelimit",
    "gremio.runner",
    "consumers.stock.service",
    "consumers.locations.service",
    "consumers.locations.mirror",
    "gremio.monitor",
)
# Series the Prometheus server makes itself, not any exporter.
PROMETHEUS_SERVER_NAMES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMETHEUS_SERVER_PREFIXES = ("scrape_",)

# The series each family type exposes besides its own name (prometheus-client's naming).
TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# --- a PromQL tokenizer that only wants metric names --------------------------------------

AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
# Keywords followed by a parenthesised list of label names, not expressions.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "start", "end", "inf", "nan"})
FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
        "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
        "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
        "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
        "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
        "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
        "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
        "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
        "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
        "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
        "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan",
        "tanh", "time", "timestamp", "vector", "year",
    }
)  # fmt: skip
NOT_METRICS = AGGREGATIONS | LABEL_LIST_KEYWORDS | KEYWORDS | FUNCTIONS

QUOTES = "\"'`"
MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})


def _is_name_start(char: str) -> bool:
    return char.isascii() and (char.isalpha() or char in "_:")


def _is_name_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "_:")


def _read_string(expr: str, start: int) -> tuple[str, int]:
    """The string literal opening at start (", ' with escapes, ` raw) and the index after it."""
    quote = expr[start]
    i = start + 1
    value: list[str] = []
    while i < len(expr):
        char = expr[i]
        if char == quote:
            return "".join(value), i + 1
        if char == "\\" and quote != "`":
            if i + 1 >= len(expr):
                break
            value.append(expr[i + 1])  # good enough for names: \" is ", \\ is \
            i += 2
            continue
        value.append(char)
        i += 1
    raise ValueError(f"unterminated string at {start} in {expr!r}")


def _read_name(expr: str, start: int) -> tuple[str, int]:
    i = start
    while i < len(expr) and _is_name_char(expr[i]):
        i += 1
    return expr[start:i], i


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _read_matchers(expr: str, start: int, names: set[str]) -> int:
    """Skip the {...} opening at start; add the metric names it selects (__name__="x", or a
    lone quoted name as in {"x", job="y"}). Returns the index after the closing brace."""
    i = start + 1
    label: str | None = None
    operator: str | None = None
    while True:
        i = _skip_space(expr, i)
        if i >= len(expr):
            raise ValueError(f"unterminated {{ at {start} in {expr!r}")
        char = expr[i]
        if char == "}":
            return i + 1
        if char == ",":
            label, operator = None, None
            i += 1
        elif char in QUOTES:
            value, i = _read_string(expr, i)
            if operator is None and label is None:
                names.add(value)  # {"metric.name"}: a quoted metric name
                label = ""
            elif operator is None:
                raise ValueError(f"a string where a matcher's operator belongs at {i} in {expr!r}")
            elif label == "__name__" and operator == "=":
                names.add(value)
        elif _is_name_start(char) and operator is None:
            label, i = _read_name(expr, i)
        elif expr[i : i + 2] in MATCH_OPERATORS:
            operator = expr[i : i + 2]
            i += 2
        elif char == "=":
            operator = "="
            i += 1
        else:
            raise ValueError(f"unexpected {char!r} in a label matcher at {i} in {expr!r}")


def _skip_label_list(expr: str, start: int) -> int:
    """Skip the (label, ...) opening at start, strings and all; the index after the )."""
    i = start + 1
    while i < len(expr):
        char = expr[i]
        if char == ")":
            return i + 1
        if char in QUOTES:
            _, i = _read_string(expr, i)
        else:
            i += 1
    raise ValueError(f"unterminated label list at {start} in {expr!r}")


def _skip_to(expr: str, start: int, closing: str) -> int:
    end = expr.find(closing, start + 1)
    if end < 0:
        raise ValueError(f"unterminated {expr[start]} at {start} in {expr!r}")
    return end + 1


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads, as written (histogram suffixes kept).

    Not a parser: identifiers count unless they are keywords, aggregations or functions, are
    followed by "(", or sit inside {...} (label matchers), [...] (ranges, subqueries) or the
    label list after by/without/on/ignoring/group_left/group_right. Strings, numbers and
    durations, comments and Grafana variables ($__rate_interval, ${x}) are skipped.
    """
    names: set[str] = set()
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end + 1
        elif char in QUOTES:
            _, i = _read_string(expr, i)
        elif char == "{":
            i = _read_matchers(expr, i, names)
        elif char == "[":
            i = _skip_to(expr, i, "]")
        elif char == "$":
            if expr.startswith("${", i):
                i = _skip_to(expr, i + 1, "}")
            else:
                _, i = _read_name(expr, i + 1)
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            # Numbers (1, 0.5, 1e-3, 0x1f) and durations (5m, 1h30m): never names.
            i += 1
            while i < len(expr) and (_is_name_char(expr[i]) or expr[i] == "."):
                if expr[i] in "eE" and expr[i + 1 : i + 2] in ("+", "-"):
                    i += 1
                i += 1
        elif _is_name_start(char):
            name, i = _read_name(expr, i)
            word = name.lower()
            after = _skip_space(expr, i)
            if word in LABEL_LIST_KEYWORDS:
                if expr[after : after + 1] == "(":
                    i = _skip_label_list(expr, after)
            elif word in NOT_METRICS or expr[after : after + 1] == "(":
                pass  # a keyword, or a function call
            else:
                names.add(name)
        else:
            i += 1  # operators, parentheses, commas, @
    return names


def histogram_base(name: str) -> str:
    """name without a histogram's or summary's series suffix (_bucket, _sum, _count)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


# --- what is exported ---------------------------------------------------------------------


def _exported_families() -> dict[str, str]:
    """Every metric family in the default REGISTRY after importing METRIC_MODULES, name -> type."""
    for module in METRIC_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(
                f"cannot import {module} ({exc}), so the metrics it exports are unknown", pytrace=False
            )
    families = {family.name: family.type for family in REGISTRY.collect()}
    # The monitor serves its own registry, so it lists its series names, as PromQL spells them.
    for name in _monitor_metric_names():
        families.setdefault(name, "untyped")
        if name.endswith("_total"):
            families.setdefault(name.removesuffix("_total"), "counter")
    return families


def _monitor_metric_names() -> tuple[str, ...]:
    return tuple(getattr(importlib.import_module("gremio.monitor"), "METRIC_NAMES", ()))


def _hint() -> str:
    if _monitor_metric_names():
        return ""
    return (
        " (gremio.monitor has no METRIC_NAMES: it serves its own CollectorRegistry, so list its series"
        " there, counters with _total, or register its collectors in prometheus_client.REGISTRY)"
    )


def _series_names(families: dict[str, str]) -> set[str]:
    """The series names the families appear under (counters both with and without _total)."""
    names = set(families)
    for name, kind in families.items():
        names.update(name + suffix for suffix in TYPE_SUFFIXES.get(kind, ()))
    return names


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8")) or {}
    return [rule for group in document.get("groups") or [] for rule in group.get("rules") or []]


def _recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule} if RULES.exists() else set()


def _unknown(names: set[str], families: dict[str, str], known: set[str]) -> list[str]:
    histograms = {name for name, kind in families.items() if kind in ("histogram", "summary")}
    return sorted(
        name
        for name in names
        if name not in known
        and name not in PROMETHEUS_SERVER_NAMES
        and not name.startswith(PROMETHEUS_SERVER_PREFIXES)
        and histogram_base(name) not in histograms
    )


# --- the dashboard ------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _panel_metric_names(panel: dict) -> set[str]:
    return set().union(*(metric_names(target["expr"]) for target in panel["targets"]))


def test_the_dashboard_loads_and_every_panel_is_titled_uniquely_numbered_and_on_prometheus():
    dashboard = _dashboard()
    assert dashboard["uid"] == "gremio" and dashboard["title"] == "gremio — vital signs"
    panels = list(_panels(dashboard["panels"]))
    assert panels, "the dashboard has no panels"
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), f"panel ids: {ids}"
    for panel in panels:
        title = panel.get("title", "").strip()
        assert title, f"panel {panel.get('id')} has no title"
        assert panel["type"] in ("timeseries", "stat"), f"{title}: type {panel['type']}"
        assert panel.get("datasource") == {"type": "prometheus", "uid": DATASOURCE_UID}, title
        targets = panel.get("targets") or []
        assert targets, f"{title}: no queries"
        ref_ids = [target.get("refId") for target in targets]
        assert len(set(ref_ids)) == len(ref_ids), f"{title}: refIds {ref_ids}"
        for target in targets:
            assert target.get("expr", "").strip(), f"{title}: a query without an expression"
            if "datasource" in target:
                assert target["datasource"]["uid"] == DATASOURCE_UID, title


def test_the_live_carts_panel_takes_the_max_over_instances_not_the_sum():
    # Each locations instance mirrors the partitions it does not hold: each counts the whole fleet.
    exprs = [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel["targets"]
        if "gremio_locations_live_carts" in metric_names(target["expr"])
    ]
    assert exprs and all(expr.replace(" ", "").startswith("max(") for expr in exprs), exprs


def test_the_provisioning_points_grafana_at_the_dashboard_and_at_prometheus_by_its_uid():
    datasources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    (prometheus,) = (source for source in datasources if source["uid"] == DATASOURCE_UID)
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert [provider["options"]["path"] for provider in providers] == ["/var/lib/grafana/dashboards"]
    assert all(provider["type"] == "file" for provider in providers)


def test_every_metric_the_dashboard_queries_is_exported():
    families = _exported_families()
    known = _series_names(families) | _recorded_names()
    unknown = {
        panel["title"]: found
        for panel in _panels(_dashboard()["panels"])
        if (found := _unknown(_panel_metric_names(panel), families, known))
    }
    assert not unknown, f"panels query metrics nothing exports: {unknown}{_hint()}"


def test_every_metric_the_alert_rules_use_is_exported():
    if not RULES.exists():
        pytest.skip(f"{RULES.relative_to(ROOT)} is not written yet")
    rules = _rules()
    assert rules, f"{RULES.relative_to(ROOT)} has no rules"
    families = _exported_families()
    known = _series_names(families) | _recorded_names()
    unknown = {
        rule.get("alert") or rule.get("record"): found
        for rule in rules
        if (found := _unknown(metric_names(str(rule["expr"])), families, known))
    }
    assert not unknown, f"rules use metrics nothing exports: {unknown}{_hint()}"


# --- the tokenizer itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("rate(gremio_api_accepted_total[5m])", {"gremio_api_accepted_total"}),
        (
            'sum by (endpoint) (rate(gremio_api_accepted_total{endpoint="sales"}[$__rate_interval]))',
            {"gremio_api_accepted_total"},
        ),
        ("SUM BY (job) (up) * 1e+3 + 0x1f - Inf + .5", {"up"}),
        (
            "time() - gremio_daily_report_newest_day_end_timestamp_seconds"
            " > 86400 + gremio_daily_report_due_seconds",
            {"gremio_daily_report_newest_day_end_timestamp_seconds", "gremio_daily_report_due_seconds"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(gremio_api_delivery_seconds_bucket[5m])))",
            {"gremio_api_delivery_seconds_bucket"},
        ),
        (
            "sum(rate(errors_total[5m])) / ignoring (reason) group_left(endpoint) sum(requests_total) > bool 0.05"
            ' unless on(job) up{job=~"api|stock"} == 0 and absent(missing_metric) offset -1h30m',
            {"errors_total", "requests_total", "up", "missing_metric"},
        ),
        ("max_over_time(deriv(lag[5m])[1h:1m]) @ end() or vector(0)", {"lag"}),
        ('count_values("by", up) without (instance)', {"up"}),
        ("job:gremio_kafka_group_lag:sum", {"job:gremio_kafka_group_lag:sum"}),
        (
            '{__name__="gremio_kafka_brokers", job="monitor"} + {__name__=~"ignored_.*"}',
            {"gremio_kafka_brokers"},
        ),
        ('{"gremio.quoted", job="x"}', {"gremio.quoted"}),
        ("deriv(x[5m]) > 0 # a comment naming not_a_metric\n and y", {"x", "y"}),
        ('gremio_x{instance=~"${instance}"} * on (job) ${scale} + $factor', {"gremio_x"}),
    ],
)
def test_the_tokenizer_finds_the_metric_names(expr, names):
    assert metric_names(expr) == names


def test_the_tokenizer_is_not_fooled_by_braces_and_quotes_inside_label_values():
    expr = (
        'gremio_api_rejected_total{reason="a}b", endpoint=\'x"}y\', other=~"\\"} not_a_metric {", raw=`}`}'
        ' + sum without ("we}ird", reason) (gremio_api_accepted_total{reason!~"(}"})'
    )
    assert metric_names(expr) == {"gremio_api_rejected_total", "gremio_api_accepted_total"}


@pytest.mark.parametrize("expr", ['foo{a="b}', "foo{a=b}", "rate(foo[5m)", "sum by (a"])
def test_the_tokenizer_refuses_what_it_cannot_read(expr):
    with pytest.raises(ValueError, match=r"unterminated|unexpected|belongs"):
        metric_names(expr)


def test_histogram_suffixes_are_stripped_and_only_checked_against_histograms():
    assert histogram_base("gremio_api_delivery_seconds_bucket") == "gremio_api_delivery_seconds"
    assert histogram_base("gremio_api_delivery_seconds_count") == "gremio_api_delivery_seconds"
    assert histogram_base("gremio_kafka_brokers") == "gremio_kafka_brokers"
    families = {"gremio_api_delivery_seconds": "histogram", "gremio_kafka_brokers": "gauge"}
    known = _series_names(families)
    assert (
        _unknown({"gremio_api_delivery_seconds_sum", "up", "scrape_duration_seconds"}, families, known) == []
    )
    assert _unknown({"gremio_kafka_brokers_count"}, families, known) == ["gremio_kafka_brokers_count"]
