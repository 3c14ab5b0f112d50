"""deploy/grafana/upload-service.json: a Grafana dashboard that imports as it is (a
Prometheus datasource variable, no fixed datasource uid), whose every query names
only metrics the three services really export: the names are collected from their
registries at test time, so renaming a metric without the dashboard fails here."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "upload-service.json"

# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


def registries():
    from gateway import metrics as gateway_metrics
    from thumbnail_service import metrics as thumbnail_metrics
    from validator_service import metrics as validator_metrics

    return {"gateway": gateway_metrics.REGISTRY, "validator": validator_metrics.REGISTRY,
            "thumbnail": thumbnail_metrics.REGISTRY}


def exported(registry) -> tuple[set[str], set[str]]:
    """The sample names a registry can expose (a labelled metric with no child yet
    exposes none, so its names come from its type) and its label names."""
    names, labels = set(), {"le"}
    for family in registry.collect():
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("_sum", "_count", "_created"), "info": ("_info",)}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    for collector in list(registry._collector_to_names):  # labelled metrics without children yet
        labels |= set(getattr(collector, "_labelnames", ()))
    return names, labels


def all_exported() -> tuple[set[str], set[str]]:
    names, labels = set(), set(TARGET_LABELS)
    for registry in registries().values():
        more_names, more_labels = exported(registry)
        names |= more_names
        labels |= more_labels
    return names, labels


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and label names a PromQL expression uses."""
    labels = set()
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for matchers in re.findall(r"\{([^}]*)\}", without_strings):
        labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", without_strings):
        labels |= {name.strip() for name in grouping.split(",") if name.strip()}
    bare = re.sub(r"\{[^}]*\}", "", without_strings)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\$\{?[a-zA-Z_]+\}?", "", bare)  # Grafana variables
    names = {word for word in re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", bare)
             if word.lower() not in KEYWORDS}
    return names, labels


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(board: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels(board) for target in panel.get("targets", [])]


def test_the_dashboard_is_importable_with_a_datasource_variable():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] == "upload-service" and board["title"]
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    uid = "${" + variable["name"] + "}"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_do_not_overlap_on_the_24_column_grid():
    taken = set()
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_names_only_metrics_and_labels_the_services_export():
    names, labels = all_exported()
    problems = []
    for title, expr in queries(dashboard()):
        used_names, used_labels = referenced(expr)
        assert used_names, f"{title}: no metric found in {expr}"
        if unknown := used_names - names:
            problems.append(f"{title}: unknown metric {sorted(unknown)} in {expr}")
        if unknown := used_labels - labels:
            problems.append(f"{title}: unknown label {sorted(unknown)} in {expr}")
    assert not problems, "\n".join(problems)


def test_the_panels_the_operators_asked_for_are_there():
    used = set()
    for _, expr in queries(dashboard()):
        used |= referenced(expr)[0]
    assert {"upload_requests_total", "upload_stored_bytes_total", "upload_refusals_total",
            "upload_step_seconds_bucket", "upload_grpc_client_calls_total", "upload_grpc_server_calls_total",
            "upload_thumbnails_pending", "upload_service_up", "upload_validator_verdicts_total",
            "upload_thumbnail_renders_total"} <= used
    steps = [expr for _, expr in queries(dashboard()) if "upload_step_seconds_bucket" in expr]
    assert any("0.5," in e for e in steps) and any("0.99," in e for e in steps)
    assert all("by (le, step)" in e for e in steps)


@pytest.mark.parametrize("expr, name, label", [
    ('sum(rate(upload_requets_total{outcome="stored"}[5m]))', "upload_requets_total", None),
    ('sum by (reasons) (rate(upload_refusals_total[5m]))', None, "reasons"),
    ('rate(upload_requests_total{outcom="x"}[5m])', None, "outcom"),
])
def test_the_check_catches_a_misspelt_metric_or_label(expr, name, label):
    names, labels = all_exported()
    used_names, used_labels = referenced(expr)
    if name:
        assert name in used_names - names
    if label:
        assert label in used_labels - labels


def test_the_extractor_reads_promql():
    names, labels = referenced('histogram_quantile(0.99, sum by (le, step) (rate(upload_step_seconds_bucket'
                               '{step!="db", job=~"a.*"}[$__rate_interval]))) * 60 + on(instance) up')
    assert names == {"upload_step_seconds_bucket", "up"}
    assert labels == {"le", "step", "job", "instance"}
