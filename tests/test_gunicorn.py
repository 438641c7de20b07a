"""The production server, for real: gunicorn with service/gunicorn_conf.py, two worker processes,
on a loopback port. Metrics must add up across workers, logs must be JSON lines without intake
values, and SIGTERM must let a request in flight finish."""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLES, ROOT, example
from tests.servers import Gunicorn

# Values that exist only in the intakes these tests send: finding one in the log is a leak.
SECRET_SUBJECT = "subj-ZEBRA-OCELOT-4417"
SECRET_MEDICATION = "quetiapine-MARMOSET-9920"


@pytest.fixture(scope="module")
def gunicorn_two_workers(tmp_path_factory):
    with Gunicorn(tmp_path_factory.mktemp("gunicorn"), workers=2) as running:
        running.headers = {"Authorization": f"Bearer {running.api_key('screen', 'read')}"}
        yield running


def scrape(gunicorn_two_workers: Gunicorn) -> dict[tuple[str, tuple], float]:
    text = requests.get(gunicorn_two_workers.url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def screen(gunicorn_two_workers: Gunicorn, body: dict, **headers: str) -> requests.Response:
    # A new connection per request (no session): the kernel hands connections to either worker.
    return requests.post(gunicorn_two_workers.url + "/v1/screenings", json=body, headers={**gunicorn_two_workers.headers, **headers},
                         timeout=30)


def pids_serving(gunicorn_two_workers: Gunicorn, request_ids: set[str]) -> Counter:
    return Counter(r["pid"] for r in gunicorn_two_workers.log_records() if r.get("request_id") in request_ids)


def test_metrics_add_up_across_worker_processes(gunicorn_two_workers):
    before = scrape(gunicorn_two_workers)
    eligible, ineligible = example("eligible-iv"), example("ineligible-several")
    invalid = copy.deepcopy(eligible)
    invalid["vitals"]["systolic_bp"] = 900
    sent = Counter()
    request_ids: set[str] = set()
    # Keep going until both workers have answered some (at most 300 requests), so the sums
    # below can only be right if the scrape reads every worker's samples.
    for i in range(300):
        kind, body = [("eligible", eligible), ("ineligible", ineligible), ("invalid", invalid)][i % 3]
        rid = f"metrics-{i}"
        response = screen(gunicorn_two_workers, body, **{"X-Request-ID": rid})
        assert response.status_code == (422 if kind == "invalid" else 200), response.text
        sent[kind] += 1
        request_ids.add(rid)
        if i >= 29 and i % 3 == 2 and len(pids_serving(gunicorn_two_workers, request_ids)) == 2:
            break
    served_by = pids_serving(gunicorn_two_workers, request_ids)
    assert len(served_by) == 2, f"one worker served everything: {served_by}"
    assert sum(served_by.values()) == sum(sent.values())

    after = scrape(gunicorn_two_workers)
    digest = requests.get(gunicorn_two_workers.url + "/v1/rulesets/current", headers=gunicorn_two_workers.headers, timeout=10).json()["digest"]

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("screening_decisions_total", decision="eligible", ruleset_digest=digest) == sent["eligible"]
    assert delta("screening_decisions_total", decision="ineligible", ruleset_digest=digest) == sent["ineligible"]
    assert delta("screening_decisions_total") == sent["eligible"] + sent["ineligible"]
    for rule_id in ("severe_hypertension", "active_psychosis", "active_substance_use_disorder"):
        assert delta("screening_rule_hits_total", rule_id=rule_id) == sent["ineligible"]
    assert delta("screening_validation_errors_total", path="vitals.systolic_bp") == sent["invalid"]
    route = "/v1/screenings"
    assert delta("screening_http_request_duration_seconds_count", route=route, status="200") == \
        sent["eligible"] + sent["ineligible"]
    assert delta("screening_http_request_duration_seconds_count", route=route, status="422") == sent["invalid"]
    # Every request falls in the +Inf bucket; the histogram is cumulative.
    assert delta("screening_http_request_duration_seconds_bucket", route=route, status="200", le="+Inf") == \
        sent["eligible"] + sent["ineligible"]


def test_every_instance_reports_the_ruleset_it_serves(gunicorn_two_workers):
    current = requests.get(gunicorn_two_workers.url + "/v1/rulesets/current", headers=gunicorn_two_workers.headers, timeout=10).json()
    samples = scrape(gunicorn_two_workers)
    served = {dict(labels)["digest"]: v for (name, labels), v in samples.items() if name == "screening_ruleset_info"}
    assert served == {current["digest"]: 1.0}
    ready = requests.get(gunicorn_two_workers.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["ruleset"]["ok"] and body["checks"]["store"]["ok"]
    assert body["ruleset"]["digest"] == current["digest"]


def test_request_log_is_json_with_request_id_and_never_intake_values(gunicorn_two_workers):
    raw = example("ineligible-several")
    raw["subject_id"] = SECRET_SUBJECT
    raw["medications"] = [{"name": SECRET_MEDICATION, "class": "ssri"}]
    ok = screen(gunicorn_two_workers, raw, **{"X-Request-ID": "trace-log-0001"})
    assert ok.status_code == 200 and ok.json()["subject_id"] == SECRET_SUBJECT
    bad = copy.deepcopy(raw)
    bad["vitals"]["systolic_bp"] = 900
    bad["favourite_colour"] = SECRET_MEDICATION  # an unknown field, echoing a value back
    rejected = screen(gunicorn_two_workers, bad, **{"X-Request-ID": "trace-log-0002"})
    assert rejected.status_code == 422

    records = gunicorn_two_workers.log_records()  # raises if any line is not JSON, gunicorn's own included
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)
    line = next(r for r in records if r.get("request_id") == "trace-log-0001")
    assert line["logger"] == "screening.request"
    assert (line["method"], line["route"], line["status"], line["decision"]) == \
        ("POST", "/v1/screenings", 200, "ineligible")
    assert line["ruleset_digest"] == ok.json()["ruleset"]["digest"]
    assert "active_psychosis" in line["reasons"]
    token = gunicorn_two_workers.headers["Authorization"].split()[1]
    assert line["client_id"] == token.split("_")[1]  # the key's id, never the key
    assert token not in gunicorn_two_workers.log_text()
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    refused = next(r for r in records if r.get("request_id") == "trace-log-0002")
    assert refused["status"] == 422 and "vitals.systolic_bp" in refused["invalid_fields"]
    assert [r.get("request_id") for r in records].count("trace-log-0001") == 1  # one line per request

    text = gunicorn_two_workers.log_text()
    assert SECRET_SUBJECT not in text
    assert SECRET_MEDICATION not in text
    assert "MARMOSET" not in text and "ZEBRA" not in text


def test_x_request_id_is_honoured_when_sane_and_replaced_when_not(gunicorn_two_workers):
    body = example("eligible-iv")
    assert screen(gunicorn_two_workers, body, **{"X-Request-ID": "abc.DEF_123:456-7"}).headers["X-Request-ID"] == "abc.DEF_123:456-7"
    for hostile in ("has spaces in it", "x" * 129, "-leading-dash", "quote\"d", "semi;colon"):
        response = screen(gunicorn_two_workers, body, **{"X-Request-ID": hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), hostile
    generated = screen(gunicorn_two_workers, {"subject_id": "x"})
    assert generated.status_code == 422
    assert generated.json()["error"]["request_id"] == generated.headers["X-Request-ID"]


def test_counts_survive_a_worker_that_dies(tmp_path):
    """A worker killed outright is replaced; what it counted stays in the sums, and its live
    gauge is dropped (child_exit) while the replacement reports the ruleset it serves."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # Samples a previous run left behind (1000 decisions): the config must drop them at start.
    subprocess.run([sys.executable, "-c", "from service.observability import metrics; "
                    "metrics.record_decision('ineligible', 'sha256:old', ['active_psychosis'] * 1000)"],
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, check=True, cwd=ROOT)
    assert list(metrics_dir.glob("counter_*.db"))
    with Gunicorn(tmp_path, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as running:
        running.headers = {"Authorization": f"Bearer {running.api_key('screen', 'read')}"}
        ids = {f"dies-{i}" for i in range(20)}
        for rid in sorted(ids):
            assert screen(running, example("ineligible-several"), **{"X-Request-ID": rid}).status_code == 200
        victim, _ = pids_serving(running, ids).most_common(1)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            booted = [r["pid"] for r in running.log_records() if str(r["message"]).startswith("Booting worker")]
            if len(booted) >= 3 and requests.get(running.url + "/healthz", timeout=5).ok:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no replacement worker")
        samples = scrape(running)
        assert total(samples, "screening_decisions_total", decision="ineligible") == 20
        assert total(samples, "screening_rule_hits_total", rule_id="active_psychosis") == 20
        info = [v for (name, _), v in samples.items() if name == "screening_ruleset_info"]
        assert info == [1.0]
        assert list(metrics_dir.glob(f"gauge_live*_{victim}.db")) == []
        assert list(metrics_dir.glob(f"counter_{victim}.db"))  # its counts are kept


def test_sigterm_lets_a_request_in_flight_finish(tmp_path):
    """A client is half-way through sending an intake when the server is told to stop: the worker
    holding it finishes the request (200, a decision) before it exits, and gunicorn exits 0."""
    body = (EXAMPLES / "ineligible-several.json").read_bytes()
    with Gunicorn(tmp_path, workers=2, env={"SCREENING_GRACEFUL_TIMEOUT": "20"}) as running:
        key = running.api_key("screen")
        conn = socket.create_connection(("127.0.0.1", running.port), timeout=30)
        head = (f"POST /v1/screenings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {key}\r\nX-Request-ID: in-flight-1\r\nConnection: close\r\n"
                f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        conn.sendall(head)
        # gunicorn answers "100 Continue" once a worker thread has taken the request: from here
        # on it is in flight.
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body[:50])
        running.proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        assert running.proc.poll() is None, "gunicorn exited with a request in flight"
        conn.sendall(body[50:])
        response = _read_http_response(conn)
        conn.close()
        status_line, _, payload = response.partition(b"\r\n\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), response[:300]
        assert json.loads(payload)["decision"] == "ineligible"
        assert running.proc.wait(30) == 0
        records = running.log_records()
        line = next(r for r in records if r.get("request_id") == "in-flight-1")
        assert line["status"] == 200 and line["latency_ms"] >= 2000
        term = next(r["ts"] for r in records if r["message"] == "Handling signal: term")
        assert term < line["ts"]  # answered after the signal, not before


def _read_http_response(conn: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")]
            if lengths and len(rest) >= lengths[0]:
                return data
