"""Alert rules and dashboard: every query names metrics that exist (ours from
radalign/framework/metrics.py, the rest from the exporters the README names)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from k8s_support import K8S, load_docs
from prometheus_client.metrics import MetricWrapperBase

from radalign import deploy
from radalign.concepts import metrics_site
from radalign.delivery import metrics as delivery_metrics
from radalign.drafting import metrics as drafting_metrics
from radalign.framework import metrics
from radalign.ingest import metrics as gateway_metrics
from radalign.review import metrics as review_metrics

METRIC_MODULES = (metrics, gateway_metrics, drafting_metrics, delivery_metrics, metrics_site, review_metrics)

#: Metrics of other exporters the rules use: Strimzi's Kafka Exporter, kube-state-metrics, Triton.
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag",
    "kube_deployment_status_replicas_unavailable",
    "kube_deployment_status_replicas_available",
    "nv_inference_queue_duration_us",
    "nv_inference_request_success",
    "up",  # Prometheus' own scrape health
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}


def exported_metric_names() -> set[str]:
    """Sample names the project's collectors expose (counter `_total`, histogram `_bucket`...)."""
    names: set[str] = set()
    for obj in (o for module in METRIC_MODULES for o in vars(module).values()):
        if not isinstance(obj, MetricWrapperBase):
            continue
        for family in obj.describe():
            base = family.name
            if family.type == "counter":
                names |= {f"{base}_total"}
            elif family.type == "histogram":
                names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
            else:
                names.add(base)
    return names


def metric_names_in(expr: str) -> set[str]:
    """Metric (and recording-rule) names in a PromQL expression, without a PromQL parser:
    drop strings, label matchers, ranges and grouping clauses, then what is left that is not a
    function call, keyword or number is a metric name."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:.])\d+(\.\d+)?([eE][-+]?\d+)?", " ", s)  # numbers, 1e-9 included
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def _rules() -> list[dict]:
    (doc,) = load_docs(K8S / "monitoring" / "prometheusrule.yaml")
    assert doc.kind == "PrometheusRule" and doc.body["apiVersion"] == "monitoring.coreos.com/v1"
    return [r for g in doc.body["spec"]["groups"] for r in g["rules"]]


def test_the_parser_finds_metric_names():
    expr = 'histogram_quantile(0.95, sum by (stage, le) (rate(radalign_stage_seconds_bucket{stage=~"a|b"}[5m]))) > 2 and on (stage) radalign:x'
    assert metric_names_in(expr) == {"radalign_stage_seconds_bucket", "radalign:x"}
    assert metric_names_in("a:ratio:rate15m / clamp_min(sum(rate(b_total[5m])), 1e-9) > 0.05") == {"a:ratio:rate15m", "b_total"}


def test_exported_metric_names_are_found():
    names = exported_metric_names()
    assert {"radalign_events_total", "radalign_dead_letters_total", "radalign_end_to_end_seconds_bucket", "radalign_in_flight"} <= names


def test_every_alert_and_recording_rule_names_existing_metrics():
    ours = exported_metric_names()
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        used = metric_names_in(rule["expr"])
        assert used, f"{rule.get('alert') or rule.get('record')}: no metric found in its expression"
        unknown = used - ours - EXTERNAL_METRICS - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')} uses unknown metrics {unknown}"


def test_alerts_cover_what_operators_need():
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    need = {
        "dead letters": "radalign_dead_letters_total",
        "end-to-end SLO": "radalign:end_to_end_seconds",
        "consumer lag": "kafka_consumergroup_lag",
        "stage readiness": "kube_deployment_status_replicas",
        "Triton queue": "nv_inference_queue_duration_us",
        "LLM fall-back rate": "radalign_drafting_fallbacks_total",
        "gateway refusals": "radalign_gateway_instances_refused_total",
        "a target down": "up{",
        "delivery failures": "radalign_deliveries_total",
        "delivery dead letters per destination": "radalign_delivery_dead_letters_total",
        "a destination's open circuit": "radalign_delivery_circuit_open",
        "STAT review queue age": 'radalign_review_queue_oldest_by_priority_seconds{priority="stat"}',
        "routine review queue age": 'radalign_review_queue_oldest_by_priority_seconds{priority="routine"}',
    }
    for what, metric in need.items():
        assert any(metric in a["expr"] for a in alerts.values()), f"no alert on {what}"
    slo = [a["expr"] for a in alerts.values() if "end_to_end" in a["expr"]]
    assert any('lane="stat"' in e for e in slo) and any('lane="routine"' in e for e in slo)
    for name, a in alerts.items():
        assert a["labels"]["severity"] in {"warning", "critical"}, name
        assert a["annotations"]["summary"] and a["annotations"]["description"] and "for" in a, name


def test_slo_thresholds_stay_below_the_last_finite_bucket():
    """histogram_quantile cannot report beyond the last finite bucket: a higher SLO never fires."""
    last = max(metrics.END_TO_END._upper_bounds[:-1])
    for a in _rules():
        if "alert" in a and "end_to_end" in a["expr"]:
            threshold = float(re.search(r">\s*([0-9.]+)\s*$", a["expr"].strip()).group(1))
            assert threshold < last


def test_dashboard_panels_query_existing_metrics():
    (doc,) = load_docs(K8S / "monitoring" / "grafana-dashboard.yaml")
    dash = json.loads(doc.body["data"]["radalign-stream.json"])
    assert dash == deploy.grafana_dashboard()
    ours = exported_metric_names()
    titles = [p["title"] for p in dash["panels"]]
    for needed in ("Throughput", "latency p50 / p95", "End-to-end", "Dead letters", "Retries", "In flight", "Gateway", "fall-backs", "LLM latency", "Delivery"):
        assert any(needed in t for t in titles), f"no panel for {needed}"
    for panel in dash["panels"]:
        assert panel["type"] == "timeseries" and panel["targets"]
        for target in panel["targets"]:
            unknown = metric_names_in(target["expr"]) - ours - EXTERNAL_METRICS
            assert not unknown, f"panel {panel['title']!r} uses unknown metrics {unknown}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", ["radalign-stages", "radalign-triton"])
def test_pod_monitors_select_pods_and_name_a_port(name):
    docs = {d.name: d for d in load_docs(K8S / "monitoring" / "podmonitor.yaml")}
    spec = docs[name].body["spec"]
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/name"] == "radalign"
    assert all(e["port"] and e["path"] == "/metrics" for e in spec["podMetricsEndpoints"])


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; scripts/bootstrap.sh does)")


def _rules_file(tmp_path) -> str:
    (doc,) = load_docs(K8S / "monitoring" / "prometheusrule.yaml")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": doc.body["spec"]["groups"]}, sort_keys=False))
    return str(path)


@needs_promtool
def test_promtool_checks_the_rules(tmp_path):
    out = subprocess.run([PROMTOOL, "check", "rules", _rules_file(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def _alert_annotations() -> dict[str, dict[str, str]]:
    """Each alert rule's own annotations: promtool compares them too."""
    return {r["alert"]: r["annotations"] for r in _rules() if "alert" in r}


def _promtool_test_rules(tmp_path, input_series: list[dict[str, str]], alert_rule_test: list[dict]) -> None:
    """`promtool test rules` of our rules on these series (one-minute steps), expecting these alerts."""
    tests = {
        "rule_files": [_rules_file(tmp_path)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": alert_rule_test}],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_alert_unit_tests(tmp_path):
    """The new alerts fire on the series they are meant for, and stay quiet otherwise."""
    input_series = [
        # 1 fall-back per 2 drafts: 50 % > 20 %
        {"series": 'radalign_drafting_fallbacks_total{namespace="radalign", backend="openai", reason="timeout"}', "values": "0+30x60"},
        {"series": 'radalign_events_total{namespace="radalign", stage="drafting", lane="routine", outcome="ok"}', "values": "0+60x60"},
        {"series": 'up{job="radalign/radalign-stages", pod="radalign-drafting-0"}', "values": "1 1 0x40"},
        {"series": 'up{job="radalign/radalign-stages", pod="radalign-concepts-0"}', "values": "1x42"},
        {"series": 'radalign_gateway_instances_refused_total{namespace="radalign", source="dicom-cstore", reason="modality"}', "values": "0+1x60"},
        {"series": 'radalign_gateway_instances_accepted_total{namespace="radalign", source="dicom-cstore"}', "values": "0+100x60"},
        # the PACS dead-letters one report at minute 3; the FHIR server none
        {"series": 'radalign_delivery_dead_letters_total{namespace="radalign", destination="pacs", reason="timeout"}', "values": "0 0 0 1x60"},
        {"series": 'radalign_delivery_dead_letters_total{namespace="radalign", destination="ehr", reason="timeout"}', "values": "0x60"},
    ]
    alert_rule_test = [
        {
            "eval_time": "40m",
            "alertname": "RadAlignLLMFallbackRateHigh",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "radalign"}}],
        },
        {
            "eval_time": "20m",
            "alertname": "RadAlignTargetDown",
            "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "radalign/radalign-stages", "pod": "radalign-drafting-0"}}],
        },
        {"eval_time": "40m", "alertname": "RadAlignGatewayRefusalsHigh", "exp_alerts": []},  # 1 % refused: quiet
        {
            "eval_time": "10m",
            "alertname": "RadAlignDeliveryDeadLettered",
            "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": "radalign", "destination": "pacs", "reason": "timeout"}}],
        },
    ]
    # the summaries as rendered
    annotations = _alert_annotations()
    summaries = {
        "RadAlignLLMFallbackRateHigh": "50% of drafts fell back to the deterministic drafter",
        "RadAlignTargetDown": "radalign-drafting-0 does not answer Prometheus' scrape",
        "RadAlignDeliveryDeadLettered": "1 reports dead-lettered for pacs (timeout) in 15 min",
    }
    for alert in alert_rule_test:
        for expected in alert["exp_alerts"]:
            expected["exp_annotations"] = annotations[alert["alertname"]] | {"summary": summaries[alert["alertname"]]}
    _promtool_test_rules(tmp_path, input_series, alert_rule_test)


def test_review_queue_age_gauge_is_labelled_by_priority_only():
    (family,) = review_metrics.QUEUE_AGE_BY_PRIORITY.describe()
    assert family.type == "gauge" and review_metrics.QUEUE_AGE_BY_PRIORITY._labelnames == ("priority",)


@needs_promtool
@pytest.mark.parametrize("module", METRIC_MODULES, ids=lambda m: m.__name__)
def test_promtool_accepts_our_metric_names(module):
    """`promtool check metrics` (its lint: units, `_total` on counters...) on each module's exposition."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    for obj in vars(module).values():
        if isinstance(obj, MetricWrapperBase):
            registry.register(obj)
    text = generate_latest(registry)
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()


@needs_promtool
def test_promtool_review_queue_alerts(tmp_path):
    """STAT fires after 15 min waiting, routine stays quiet until 4 h."""
    annotations = _alert_annotations()
    input_series = [
        {"series": 'radalign_review_queue_oldest_by_priority_seconds{namespace="radalign", priority="stat"}', "values": "0+60x60"},
        {"series": 'radalign_review_queue_oldest_by_priority_seconds{namespace="radalign", priority="routine"}', "values": "0+60x60"},
    ]
    alert_rule_test = [
        {"eval_time": "10m", "alertname": "RadAlignReviewStatQueueStale", "exp_alerts": []},
        {
            "eval_time": "30m",
            "alertname": "RadAlignReviewStatQueueStale",
            "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "radalign"},
                "exp_annotations": annotations["RadAlignReviewStatQueueStale"] | {"summary": "A STAT study has waited 30m 0s for sign-off"},
            }],
        },
        {"eval_time": "60m", "alertname": "RadAlignReviewRoutineQueueStale", "exp_alerts": []},
    ]
    _promtool_test_rules(tmp_path, input_series, alert_rule_test)
