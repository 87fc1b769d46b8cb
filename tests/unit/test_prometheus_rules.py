"""deploy/prometheus/rules.yml: promtool checks and unit-tests it; every rule has its runbook."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from gremio.settings import REPO_ROOT

FOLDER = REPO_ROOT / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run deploy/os-packages.sh (Debian's prometheus package)"
    return found


def _run(*args: str) -> None:
    done = subprocess.run([_promtool(), *args], cwd=FOLDER, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_rules():
    _run("check", "rules", "rules.yml")


def test_promtool_unit_tests_every_rule_firing_and_quiet():
    _run("test", "rules", "rules_test.yml")
    tested = set(re.findall(r"alertname: (\w+)", (FOLDER / "rules_test.yml").read_text()))
    assert tested == {rule["alert"] for rule in _rules()}


def _rules() -> list[dict]:
    return [
        rule
        for group in yaml.safe_load((FOLDER / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
    ]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_rule_has_a_severity_a_summary_and_a_runbook_that_exists():
    operations = (REPO_ROOT / "docs" / "OPERATIONS.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in operations.splitlines() if line.startswith("#")}
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/OPERATIONS.md" and anchor in anchors, rule["alert"]
