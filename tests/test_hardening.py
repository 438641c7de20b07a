"""Red-team findings of issue 18 outside CDS Hooks (those are in test_cdshooks_trust.py and
test_cdshooks_jwt.py; the append-only triggers in test_store.py): each test failed on the code
as it was found."""
from __future__ import annotations

import base64
import json

import pytest

from tests.web_support import PASSWORDS, csrf_token, make_app


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE_CURSORS = {
    "past a 64-bit integer": _cursor(b'{"v":1,"after":9223372036854775808}'),
    "a huge integer": _cursor(b'{"v":1,"after":' + b"9" * 4000 + b"}"),
    "negative": _cursor(b'{"v":1,"after":-1}'),
    "deep nesting": _cursor(b"[" * 100_000 + b"]" * 100_000),
    "deep nesting in the value": _cursor(b'{"v":1,"after":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    "a JSON list": _cursor(b"[1]"),
}


# --- 4. cursors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/reviews"])
@pytest.mark.parametrize("name", list(HOSTILE_CURSORS))
def test_a_hostile_cursor_is_422_naming_the_cursor(db_client, path, name):
    r = db_client.get(path, query_string={"cursor": HOSTILE_CURSORS[name]})
    assert r.status_code == 422, (name, r.status_code)
    assert r.get_json()["error"]["errors"] == [{"path": "cursor", "message": "not a cursor this service issued"}]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_hostile_cursor_on_the_review_page_is_no_server_error(database_url, monkeypatch, tmp_path):
    app = make_app(monkeypatch, tmp_path, database_url)
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    token = csrf_token(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": "dr.ada", "password": PASSWORDS["dr.ada"], "csrf_token": token})
    for name, cursor in HOSTILE_CURSORS.items():
        r = client.get("/reviews", query_string={"cursor": cursor})
        # the page's answer to any cursor it did not hand out: back to the top of the queue
        assert r.status_code in (302, 422), (name, r.status_code)
    app.extensions["store"].close()


def test_decode_cursor_refuses_without_overflow_or_recursion():
    from service.store.sql import decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor(41)) == 41
    assert decode_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    for cursor in HOSTILE_CURSORS.values():
        with pytest.raises(ValueError, match="not a cursor"):
            decode_cursor(cursor)
    assert json.loads(base64.urlsafe_b64decode(encode_cursor(7) + "==")) == {"v": 1, "after": 7}


# --- 9. patterns match the whole value -----------------------------------------------------------

def test_a_trailing_newline_is_not_part_of_an_opaque_reference(db_client):
    """re.match with `$` accepted "pt-1\\n": stored, then never found by its visible text."""
    from tests.conftest import example

    raw = example("eligible-iv")
    raw["subject_id"] = "pt-1\n"
    r = db_client.post("/v1/screenings", json=raw)
    assert r.status_code == 422
    assert [e["path"] for e in r.get_json()["error"]["errors"]] == ["subject_id"]
    raw["subject_id"] = "pt-1"
    assert db_client.post("/v1/screenings", json=raw).status_code == 200


def test_api_keys_user_names_and_rule_ids_refuse_a_trailing_newline(db_app):
    from marshmallow import ValidationError

    from schemas.rulefile import RULE_ID
    from service.auth import SCOPES, authenticate, create_key
    from service.web.users import UsersConfigError, parse_users

    keys = db_app.extensions["store"].keys
    token = create_key(keys, "t", SCOPES).token
    assert authenticate(keys, token) is not None
    assert authenticate(keys, token + "\n") is None
    with pytest.raises(UsersConfigError):
        parse_users({"dr.ada\n": {"password_hash": "x", "role": "physician"}})
    RULE_ID("severe_hypertension")
    with pytest.raises(ValidationError):
        RULE_ID("severe_hypertension\n")


def _regex_calls(tree):
    import ast

    names = {"compile", "match", "search", "fullmatch", "Regexp", "FullMatch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                yield name, node.args[0].value, node.lineno


def test_no_pattern_in_the_code_accepts_a_trailing_newline():
    """Every pattern is used with re.fullmatch (or FullMatch): none may end in a bare `$`, which
    with re.match/re.search also matches before a final newline. `\\s*$` is harmless (the
    newline is whitespace either way); FullMatch keeps `$` for the exported JSON Schema."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted([*root.glob("service/**/*.py"), *root.glob("schemas/**/*.py")]):
        for name, pattern, line in _regex_calls(ast.parse(path.read_text(), str(path))):
            if name == "FullMatch" or name == "sub":
                continue
            if pattern.endswith("$") and not pattern.endswith(("\\$", "\\s*$")):
                offenders.append(f"{path.relative_to(root)}:{line}: {name}({pattern!r})")
            if name == "Regexp":
                offenders.append(f"{path.relative_to(root)}:{line}: validate.Regexp uses re.match; use FullMatch")
    assert offenders == []


# --- 11. /metrics label values stay bounded ------------------------------------------------------

def test_invented_http_methods_add_no_metric_series(client):
    """`curl -X RTMETHODA /healthz` made a new series per invented method."""
    from prometheus_client import REGISTRY, generate_latest

    def series() -> int:
        return sum(1 for line in generate_latest(REGISTRY).decode().splitlines()
                   if line.startswith("screening_http_request_duration_seconds_count"))

    client.open("/healthz", method="RTWARMUP")
    before = series()
    for i in range(25):
        assert client.open("/healthz", method=f"RTMETHOD{i}").status_code in (400, 405, 501)
    text = generate_latest(REGISTRY).decode()
    assert "RTMETHOD" not in text and "RTWARMUP" not in text
    assert series() == before
    assert 'method="other"' in text


# --- 12. `rules diff` revisions are never git options ---------------------------------------------

HOSTILE_REVISIONS = ["--output={victim}", "-o{victim}", "--remote=ext::sh", "HEAD --output={victim}", "HEAD\n", "HEAD..main"]


@pytest.mark.parametrize("option", ["--against", "--current-rev", "--candidate-rev"])
@pytest.mark.parametrize("revision", HOSTILE_REVISIONS)
def test_rules_diff_refuses_revisions_that_are_options(tmp_path, option, revision):
    """`--current-rev '--output=/tmp/x'` was handed to `git archive`, which truncated /tmp/x."""

    from click.testing import CliRunner

    from service.cli import main
    from tests.test_policy_workflow import _corpus, committed_pack

    pack_dir = committed_pack(tmp_path / "repo")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    args = ["rules", "diff", "--current", str(pack_dir), "--intakes", str(_corpus(tmp_path)),
            option, revision.format(victim=victim)]
    if option == "--current-rev":
        args += ["--candidate", str(pack_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "revision" in result.output or "commit" in result.output, result.output
    assert victim.read_text() == "precious\n"
    assert not (pack_dir / "--output").exists()


@pytest.mark.parametrize("revision", HOSTILE_REVISIONS)
def test_rules_lint_against_never_hands_git_an_option(tmp_path, revision):
    """`rules lint --against REV` reads the pack at REV through the same guarded checkout."""

    from click.testing import CliRunner

    from service.cli import main
    from tests.test_policy_workflow import committed_pack

    pack_dir = committed_pack(tmp_path / "repo")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    CliRunner().invoke(main, ["rules", "lint", str(pack_dir), "--against", revision.format(victim=victim)])
    assert victim.read_text() == "precious\n"
    assert not (pack_dir / "--output").exists()


# --- 13. caching, /docs headers, repeated query parameters ---------------------------------------

def test_api_responses_with_patient_data_are_not_stored(db_client):
    from tests.conftest import example

    made = db_client.post("/v1/screenings", json=example("review-substance-history"))
    assert made.status_code == 200
    decision_id = made.get_json()["decision_id"]
    responses = [made, db_client.get(f"/v1/decisions/{decision_id}"), db_client.get("/v1/decisions"),
                 db_client.get("/v1/reviews"), db_client.get("/v1/decisions/no-such-id"),
                 db_client.post("/v1/screenings", json={"subject_id": "pt-1"})]
    for r in responses:
        assert r.headers.get("Cache-Control") == "no-store", (r.request.path, r.status_code)


def test_the_cds_hooks_answers_are_not_stored(cds):
    from tests.cdshooks_support import hook_request, ketamine_order, situation

    r = cds.post("/cds-services/ketamine-screening-sign",
                 hook_request("order-sign", [ketamine_order()], situation("clean")[0]))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"


def test_docs_page_has_a_content_security_policy_and_cannot_be_framed(client):
    """Swagger UI still works under it: tests/test_openapi.py::test_docs_page_renders_in_headless_chromium
    fails on any CSP violation the page reports."""
    for path in ("/docs", "/docs/assets/swagger-ui-bundle.js"):
        r = client.get(path)
        assert r.status_code == 200
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path,query", [
    ("/v1/decisions", "subject_id=pt-a&subject_id=pt-b"),
    ("/v1/decisions", "limit=1&limit=200"),
    ("/v1/reviews", "status=pending&status=approved"),
    ("/v1/reviews", "cursor=a&cursor=a"),
])
def test_a_query_parameter_given_twice_is_refused_naming_it(db_client, path, query):
    """First-wins let a proxy, a log and the service read different filters from one URL."""
    r = db_client.get(f"{path}?{query}")
    assert r.status_code == 400
    name = query.split("=")[0]
    error = r.get_json()["error"]
    assert error["errors"] == [{"path": name, "message": "is given more than once"}]
    assert name in error["message"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_page_given_a_query_parameter_twice_answers_with_a_page(database_url, monkeypatch, tmp_path):
    app = make_app(monkeypatch, tmp_path, database_url)
    r = app.test_client().get("/reviews?status=pending&status=approved", base_url="https://localhost")
    assert r.status_code == 400 and r.mimetype == "text/html"
    assert "status" in r.get_data(as_text=True)
    app.extensions["store"].close()


# --- the claim-to-test table -------------------------------------------------------------------

def test_every_test_named_in_the_security_document_exists():
    """docs/security.md says which test proves each claim: a renamed or deleted test must not
    leave a claim pointing at nothing."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", (root / "docs/security.md").read_text()))
    named |= set(re.findall(r"::(test_\w+)", (root / "docs/security.md").read_text()))
    defined = set()
    for path in (root / "tests").glob("*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
    assert len(named) > 20
    assert sorted(named - defined) == []
