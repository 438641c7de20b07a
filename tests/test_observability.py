"""Request ids, the JSON request log, metrics and readiness, in one process (the flask app as the
tests and the dev server run it). tests/test_gunicorn.py checks the same under real gunicorn."""
from __future__ import annotations

import copy
import io
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from service.app import create_app
from service.observability import metrics
from service.observability.hooks import request_id_from
from service.observability.logging import REQUEST_LOGGER, JsonFormatter
from service.ruleset import default_rules_path
from service.store.sql import SqlStore
from tests.conftest import ROOT, app_settings, example


@pytest.fixture
def auth(api_token) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token}"}


def sample(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def request_log():
    """The request log's lines, as the JSON text the handler writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_decision_metrics_and_request_log_line(client, request_log, auth):
    raw = example("ineligible-several")
    raw["subject_id"] = "subj-PANGOLIN-5521"
    digest = client.get("/v1/rulesets/current", headers=auth).get_json()["digest"]
    before = sample("screening_decisions_total", decision="ineligible", ruleset_digest=digest)
    hits = sample("screening_rule_hits_total", rule_id="active_psychosis")
    latency = sample("screening_http_request_duration_seconds_count", method="POST",
                     route="/v1/screenings", status="200")

    response = client.post("/v1/screenings", json=raw, headers={**auth, "X-Request-ID": "req-42"})

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42"
    assert sample("screening_decisions_total", decision="ineligible", ruleset_digest=digest) == before + 1
    assert sample("screening_rule_hits_total", rule_id="active_psychosis") == hits + 1
    assert sample("screening_http_request_duration_seconds_count", method="POST",
                  route="/v1/screenings", status="200") == latency + 1
    [line] = [r for r in lines(request_log) if r.get("request_id") == "req-42"]
    assert line["decision"] == "ineligible" and line["ruleset_digest"] == digest
    assert line["route"] == "/v1/screenings" and line["status"] == 200 and line["method"] == "POST"
    assert line["client_id"] == auth["Authorization"].split("_")[1]
    assert "PANGOLIN" not in request_log.getvalue()


def test_validation_errors_are_counted_by_field_path_without_values(client, request_log, auth):
    raw = copy.deepcopy(example("eligible-iv"))
    raw["vitals"]["systolic_bp"] = 900
    raw["medications"] = [{"name": "a", "class": "ssri"}, {"name": "b", "class": "not-a-class"}]
    raw["secret_PANGOLIN_field"] = "PANGOLIN-VALUE"
    before = {p: sample("screening_validation_errors_total", path=p)
              for p in ("vitals.systolic_bp", "medications[].class", "<unknown field>")}

    response = client.post("/v1/screenings", json=raw, headers=auth)

    assert response.status_code == 422
    paths = {e["path"] for e in response.get_json()["error"]["errors"]}
    assert {"vitals.systolic_bp", "medications[1].class", "secret_PANGOLIN_field"} <= paths
    for path, count in before.items():
        assert sample("screening_validation_errors_total", path=path) == count + 1, path
    # Neither the client-invented field name nor any value reaches a label or the log.
    assert "PANGOLIN" not in metrics.exposition()[0].decode()
    assert "PANGOLIN" not in request_log.getvalue()
    [line] = [r for r in lines(request_log) if r.get("status") == 422]
    assert line["invalid_fields"] == ["<unknown field>", "medications[].class", "vitals.systolic_bp"]


def test_unmatched_paths_share_one_route_label(client):
    before = sample("screening_http_request_duration_seconds_count", method="GET", route="<unmatched>", status="404")
    assert client.get("/v1/decisions-that-do-not-exist/123").status_code == 404
    assert client.get("/some/other/path").status_code == 404
    after = sample("screening_http_request_duration_seconds_count", method="GET", route="<unmatched>", status="404")
    assert after == before + 2


def test_request_id_generated_echoed_and_in_error_bodies(client, auth):
    response = client.post("/v1/screenings", data="{", content_type="application/json",
                           headers={**auth, "X-Request-ID": "bad id"})
    assert response.status_code == 400
    rid = response.headers["X-Request-ID"]
    assert rid != "bad id" and len(rid) == 32
    assert response.get_json()["error"]["request_id"] == rid
    assert request_id_from("ok-1.2:3_4") == "ok-1.2:3_4"
    for hostile in (None, "", "a b", "\u00e9t\u00e9", "x" * 129, "new\nline", "<script>"):
        assert request_id_from(hostile) != hostile


def test_metrics_endpoint_is_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.get_data(as_text=True)
    for name in ("screening_decisions_total", "screening_rule_hits_total",
                 "screening_http_request_duration_seconds", "screening_ruleset_reloads_total",
                 "screening_ruleset_reload_failures_total", "screening_validation_errors_total",
                 "screening_store_failures_total", "screening_ruleset_info"):
        assert f"# TYPE {name} " in text, name


def test_reloads_and_served_ruleset(ruleset):
    ok, failed = sample("screening_ruleset_reloads_total"), sample("screening_ruleset_reload_failures_total")
    metrics.record_reload(False)
    metrics.record_reload(True)
    assert sample("screening_ruleset_reloads_total") == ok + 1
    assert sample("screening_ruleset_reload_failures_total") == failed + 1

    served = ruleset.summary
    other = {**served, "version": "9.9.9", "digest": "sha256:other"}
    metrics.set_ruleset_served(other)
    assert sample("screening_ruleset_info", **other) == 1
    assert REGISTRY.get_sample_value("screening_ruleset_info", served) is None
    metrics.set_ruleset_served(served)
    assert sample("screening_ruleset_info", **served) == 1
    assert REGISTRY.get_sample_value("screening_ruleset_info", other) is None


def test_reloader_outcomes_are_counted_and_the_served_ruleset_follows(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    app = create_app(app_settings(tmp_path, rules_dir=rules))
    old = app.extensions["rulesets"].current.summary
    ok, failed = sample("screening_ruleset_reloads_total"), sample("screening_ruleset_reload_failures_total")
    reloader = app.extensions["reloader"]

    change_rule_message(rules, "9999.0.1-rev-b")  # never the shipped version
    assert reloader.reload().status == "loaded"
    new = app.extensions["rulesets"].current.summary
    assert new["digest"] != old["digest"]
    assert sample("screening_ruleset_reloads_total") == ok + 1
    assert sample("screening_ruleset_info", **new) == 1
    assert REGISTRY.get_sample_value("screening_ruleset_info", old) is None

    (rules / "95-age.yaml").write_text("rules: [ {id: broken")
    assert reloader.reload().status == "refused"
    assert sample("screening_ruleset_reload_failures_total") == failed + 1
    assert sample("screening_ruleset_info", **new) == 1  # the last good one keeps serving
    metrics.set_ruleset_served(old)  # leave the process-wide gauge as the session app has it


def change_rule_message(rules: Path, version: str) -> None:
    """A real rule change (a message, so the pack's own tests still pass) and a version bump."""
    age = rules / "95-age.yaml"
    text = age.read_text()
    assert "needs physician review." in text
    age.write_text(text.replace("needs physician review.", "needs physician review (rev. B)."))
    pack = rules / "pack.yaml"
    bumped, count = re.subn(r"^version: .*$", f'version: "{version}"', pack.read_text(), flags=re.M)
    assert count == 1
    pack.write_text(bumped)


def test_json_formatter_fields_exceptions_and_extra():
    formatter = JsonFormatter()
    record = logging.LogRecord("screening", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    record.route = "/v1/screenings"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    out = json.loads(formatter.format(record))
    assert out["level"] == "error" and out["message"] == "failed x" and out["route"] == "/v1/screenings"
    assert "RuntimeError: boom" in out["exc_info"]
    assert out["ts"].endswith("Z")
    assert "\n" not in formatter.format(record)


def test_readyz_reports_each_check(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["ruleset"]["ok"] is True
    assert body["checks"]["ruleset"]["ruleset"]["digest"] == body["ruleset"]["digest"]


def own_app(state: Path):
    return create_app(app_settings(state))


def test_readyz_is_503_with_detail_when_the_decision_log_is_unreachable(tmp_path):
    app = own_app(tmp_path)
    # A real store whose database cannot be opened: its "file" is a directory.
    (tmp_path / "log.db").mkdir()
    app.extensions["store"] = SqlStore(f"sqlite:///{tmp_path}/log.db", migrate_now=False)
    failures = sample("screening_store_failures_total", operation="ping")

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["ruleset"]["ok"] is True
    assert body["checks"]["store"]["ok"] is False
    assert "decision log unreachable" in body["checks"]["store"]["detail"]
    assert response.headers["Retry-After"]
    assert sample("screening_store_failures_total", operation="ping") == failures + 1


def test_readyz_with_a_reachable_store(tmp_path):
    app = own_app(tmp_path)
    body = app.test_client().get("/readyz").get_json()
    assert body["status"] == "ready" and body["checks"]["store"]["ok"] is True
    assert body["checks"]["store"]["latency_ms"] >= 0


def test_compose_file_is_valid_and_wired():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"screening", "postgres", "proxy"} <= set(services)
    app = services["screening"]
    assert app["build"]["dockerfile"] == "Dockerfile"
    assert app["deploy"]["replicas"] >= 2
    assert app["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    proxy = services["proxy"]
    assert any(str(v).startswith("./deploy/nginx.conf:") for v in proxy["volumes"])
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert nginx.count("{") == nginx.count("}")
    assert "server screening:8000" in nginx and "proxy_pass http://screening" in nginx
    assert "X-Request-ID" in nginx


def test_every_environment_variable_read_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M))
    read = set()
    for path in list((ROOT / "service").rglob("*.py")):
        read |= set(re.findall(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]+)\"", path.read_text()))
        read |= set(re.findall(r"_(?:int|float|bool)\(\s*\"([A-Z][A-Z0-9_]+)\"", path.read_text()))
    missing = sorted(read - documented)
    assert not missing, f"read from the environment but not in the README table: {missing}"


def test_probes_and_metrics_need_no_api_key(anonymous_client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert anonymous_client.get(path).status_code == 200, path
    assert anonymous_client.post("/v1/screenings", json=example("eligible-iv")).status_code == 401
