"""Hostile input to POST /v1/screenings: every bad request gets a 4xx JSON error (with the field
path where a field is at fault), never a 500 or an HTML page, and the service keeps serving.

The corpus (tests/hostile.py) runs against the Flask test client and against the production
gunicorn server on a loopback port; a few cases only a raw socket can send (a lying
Content-Length, an oversized chunked body) run against the server alone.
"""
from __future__ import annotations

import http.client
import socket

import pytest
import requests
from click.testing import CliRunner

from service.cli import main
from tests.hostile import ENDPOINT, JSON, MAX_BODY, Case, corpus, dumps, good
from tests.servers import Gunicorn

CASES = corpus()


def assert_json_error(case: Case, status: int, content_type: str, body: dict | None) -> None:
    assert status == case.status, f"{case}: {status} {body}"
    assert content_type.split(";")[0].strip() == "application/json", f"{case}: {content_type}"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error["status"] == status
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    for item in error.get("errors", []):
        assert isinstance(item["path"], str) and isinstance(item["message"], str)
    if case.path:
        paths = [e["path"] for e in error.get("errors", [])]
        assert case.path in paths, f"{case}: expected {case.path!r} among {paths}"


def test_the_corpus_is_hostile_only_where_it_says(client):
    # The base intake succeeds, so each case fails for its own reason.
    assert client.post(ENDPOINT, json=good()).status_code == 200
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_test_client_gets_a_json_4xx(client, case):
    headers = {**case.headers}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    response = client.open(ENDPOINT + case.query, method=case.method, data=case.body, headers=headers)
    assert_json_error(case, response.status_code, response.content_type or "", response.get_json(silent=True))


def test_test_client_keeps_serving_after_the_corpus(client):
    for case in CASES:
        client.open(ENDPOINT + case.query, method=case.method, data=case.body,
                    headers={"Content-Type": case.content_type} if case.content_type else {})
    response = client.post(ENDPOINT, json=good())
    assert response.status_code == 200 and response.get_json()["decision"] == "eligible"


def test_text_beyond_the_basic_plane_is_fine_when_well_formed(client):
    # The surrogate check refuses unpaired escapes only: an escaped pair is one character.
    body = dumps(good()).replace(b'"sertraline"', b'"sertraline \\ud83d\\udc8a \xf0\x9f\x92\x8a"')
    response = client.post(ENDPOINT, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.get_json()


def test_thousands_of_problems_are_counted_not_all_listed(client):
    body = {**good(), "substance_use": list(range(5000))}
    error = client.post(ENDPOINT, json=body).get_json()["error"]
    assert len(error["errors"]) == 50 and "5000 problems" in error["message"]


# --- the same documents at a terminal: `screening evaluate` reads with the API's strict reader ---

CLI_CASES = [c for c in CASES if c.method == "POST" and c.content_type == JSON and not c.query]


@pytest.mark.parametrize("case", CLI_CASES, ids=str)
def test_cli_refuses_with_exit_65_and_the_field_path(case, tmp_path):
    document = tmp_path / "intake.json"
    document.write_bytes(case.body)
    result = CliRunner().invoke(main, ["evaluate", str(document)])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 65, (result.exit_code, result.output)
    if case.path and case.path not in ("$", "query.explain"):
        assert f"  {case.path}: " in result.stderr, result.stderr


# --- the production server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def gunicorn_app(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile-gunicorn")
    with Gunicorn(workdir, workers=2, env={"SCREENING_MAX_BODY_BYTES": str(MAX_BODY)}) as running:
        running.key = running.api_key("screen")
        yield running


def _send(gunicorn_app, case: Case) -> requests.Response:
    headers = {"Authorization": f"Bearer {gunicorn_app.key}", **case.headers}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    return requests.request(case.method, gunicorn_app.url + ENDPOINT + case.query, data=case.body,
                            headers=headers, timeout=30)


def test_server_gets_a_json_4xx_for_every_case(gunicorn_app):
    failures = []
    for case in CASES:
        response = _send(gunicorn_app, case)
        try:
            body = response.json()
        except ValueError:
            body = None
        try:
            assert_json_error(case, response.status_code, response.headers.get("Content-Type", ""), body)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)
    assert _screen_good(gunicorn_app) == 200


def _screen_good(gunicorn_app) -> int:
    return requests.post(gunicorn_app.url + ENDPOINT, json=good(), timeout=30,
                         headers={"Authorization": f"Bearer {gunicorn_app.key}"}).status_code


def _raw(gunicorn_app, head: bytes, body: bytes = b"", read_timeout: float = 30) -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client library to correct them); the first response back."""
    with socket.create_connection(("127.0.0.1", gunicorn_app.port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def _head(gunicorn_app, length: int | None, extra: str = "") -> bytes:
    lines = [f"POST {ENDPOINT} HTTP/1.1", f"Host: 127.0.0.1:{gunicorn_app.port}", "Content-Type: application/json",
             f"Authorization: Bearer {gunicorn_app.key}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + extra + "\r\n\r\n").encode()


def test_server_refuses_a_content_length_over_the_limit_without_reading_the_body(gunicorn_app):
    # It claims 10 MB and sends 10 bytes: the answer comes at once, not after waiting for the rest.
    status, headers, body = _raw(gunicorn_app, _head(gunicorn_app, 10 * 1024 * 1024), b'{"a": 1}  ', read_timeout=10)
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert b'"payload_too_large"' in body
    assert _screen_good(gunicorn_app) == 200


def test_server_reads_only_content_length_bytes(gunicorn_app):
    # A Content-Length shorter than the body: the service sees truncated JSON and says so.
    text = dumps(good())
    status, headers, body = _raw(gunicorn_app, _head(gunicorn_app, 20), text)
    assert status == 400 and headers["Content-Type"] == "application/json", body
    assert _screen_good(gunicorn_app) == 200


def _chunked(body: bytes, size: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def test_server_refuses_an_oversized_chunked_body(gunicorn_app):
    # No Content-Length: a valid intake padded to exactly the limit, then more. Read up to the
    # limit only, it would parse and be screened; the whole body is over the limit: 413.
    intake = dumps(good())
    body = intake + b" " * (MAX_BODY - len(intake)) + b" " * 1024
    status, headers, payload = _raw(gunicorn_app, _head(gunicorn_app, None, "\r\nTransfer-Encoding: chunked"), _chunked(body))
    assert status == 413 and headers["Content-Type"] == "application/json", payload
    # Exactly at the limit is still accepted.
    at_limit = body[:MAX_BODY]
    status, _, payload = _raw(gunicorn_app, _head(gunicorn_app, None, "\r\nTransfer-Encoding: chunked"), _chunked(at_limit))
    assert status == 200, payload
    assert _screen_good(gunicorn_app) == 200


def test_server_logs_no_server_error_for_the_corpus(gunicorn_app):
    for case in CASES:
        _send(gunicorn_app, case)
    assert _screen_good(gunicorn_app) == 200
    records = gunicorn_app.log_records()
    statuses = [r.get("status") for r in records if isinstance(r, dict)]
    assert 500 not in statuses and not [r for r in records if r.get("level") in ("error", "critical")], \
        [r for r in records if r.get("status") == 500 or r.get("level") in ("error", "critical")][:3]
