"""deploy/prometheus/rules.yml checked and unit-tested by the real promtool (scripts/ensure-prometheus
installs it): every alert fires on its condition and stays quiet without it, and a broken condition
makes its tests fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service_process import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULE_TESTS = PROMETHEUS / "rules.test.yml"
README = (ROOT / "README.md").read_text()


def promtool(*arguments: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: scripts/ensure-prometheus installs it (make test runs it)"
    return subprocess.run([binary, *arguments], cwd=cwd, capture_output=True, text=True, timeout=120)


ALERTS = {
    rule["alert"]: rule
    for group in yaml.safe_load(RULES.read_text())["groups"]
    for rule in group["rules"]
    if "alert" in rule
}
TESTS = yaml.safe_load(RULE_TESTS.read_text())


def checks_of(test: dict[str, Any], alert: str) -> list[dict[str, Any]]:
    """The evaluations of ``alert`` in one promtool test."""
    return [check for check in test.get("alert_rule_test", []) if check["alertname"] == alert]


def test_the_rules_pass_promtool_check() -> None:
    """promtool finds the rule file valid (expressions parse, templates render)."""
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests() -> None:
    """promtool test rules: every test in rules.test.yml passes."""
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_is_tested_firing_and_quiet_and_documented(alert: str) -> None:
    """Each alert has a unit test where it fires and one where it stays quiet, a summary, a description,
    a runbook pointer, and its runbook paragraph in the README."""
    checks = [check for test in TESTS["tests"] for check in checks_of(test, alert)]
    assert any(check["exp_alerts"] for check in checks), f"no test where {alert} fires"
    assert any(not check["exp_alerts"] for check in checks), f"no test where {alert} stays quiet"
    annotations = ALERTS[alert]["annotations"]
    assert {"summary", "description", "runbook"} <= set(annotations)
    assert f"#### {alert}\n" in README, f"the README has no runbook paragraph for {alert}"


def _run_with_alert_expr(tmp_path: Path, alert: str, expr: str) -> subprocess.CompletedProcess[str]:
    """promtool's tests of ``alert`` alone, against rules.yml with that alert's expression replaced."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = expr
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    kept = [{**test, "alert_rule_test": checks_of(test, alert)} for test in TESTS["tests"] if checks_of(test, alert)]
    (tmp_path / "rules.test.yml").write_text(yaml.safe_dump({**TESTS, "tests": kept}))
    return promtool("test", "rules", "rules.test.yml", cwd=tmp_path)


@pytest.mark.process  # one promtool run per alert and mutation: a few seconds
@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_a_broken_condition_fails_the_alerts_tests(tmp_path: Path, alert: str) -> None:
    """With its condition never true, the alert's firing tests fail; always true (a series with no
    labels beside the real ones), its tests fail too; as shipped, its tests pass (so the failures come
    from the condition alone)."""
    condition = ALERTS[alert]["expr"]
    shipped = _run_with_alert_expr(tmp_path, alert, condition)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    never = _run_with_alert_expr(tmp_path, alert, "vector(1) == 0")
    assert never.returncode != 0 and "got:[]" in never.stderr, never.stdout + never.stderr
    always = _run_with_alert_expr(tmp_path, alert, f"({condition}) or vector(1)")
    assert always.returncode != 0, always.stdout + always.stderr
