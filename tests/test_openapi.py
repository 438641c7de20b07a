"""The OpenAPI description, the JSON Schema files for integrators and the /docs page."""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_spec_validator import validate as validate_spec

from schemas import jsonschema as exporter
from schemas.intake import IntakeSchema
from service.api.openapi import ERRORS
from tests.conftest import EXAMPLES, ROOT, example
from tests.openapi_support import admin_headers, live_server

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("SCREENING_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def spec(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


@pytest.fixture(scope="module")
def openapi(spec) -> OpenAPI:
    return OpenAPI.from_dict(copy.deepcopy(spec))


@pytest.fixture(scope="module")
def live_api_url(app):
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def headers(app) -> dict:
    return admin_headers(app)


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = spec["components"][kind][name]
    return node


def check(openapi: OpenAPI, response: requests.Response) -> None:
    """The real response is what the description says this operation answers with this status."""
    openapi.validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))


# --- the description itself ------------------------------------------------------------------

def test_description_validates(spec):
    validate_spec(spec)
    assert spec["openapi"] == "3.0.3"


def test_every_route_is_described(app, spec):
    undocumented = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.split(".")[0] in ("docs", "api-docs"):
            continue
        if rule.endpoint.split(".")[0] == "web":  # the clinician HTML pages are not the API
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in spec["paths"].get(path, {}):
                undocumented.append(f"{method} {path}")
    assert not undocumented, f"routes missing from /openapi.json: {undocumented}"


def test_every_operation_documents_its_errors_with_the_error_body(spec):
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        label = f"{method.upper()} {path}"
        assert any(s.startswith("2") for s in responses), f"{label}: no success response"
        assert "default" in responses, f"{label}: no default (500) response"
        expected = set()
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            expected |= {"400", "413", "415", "422"}
        if "{" in path:
            expected.add("404")
        if operation.get("security"):
            expected.add("401")
        if operation.get("x-required-scope"):  # an API key without the scope
            expected.add("403")
        if re.fullmatch(r"/cds-services/\{[^}]+\}", path):  # the rules' FHIR data could not be had
            expected.add("412")
        assert expected <= set(responses), f"{label}: missing {sorted(expected - set(responses))}"
        for status, response in responses.items():
            if status.startswith("4") or status == "default" or (status == "503" and path != "/readyz"):
                media = resolve(spec, response)["content"]["application/json"]
                assert media["schema"] == error_ref, f"{label} {status}: not the Error body"
    # And the bodies themselves are described, with an example each that fits the Error schema.
    error_schema = exporter.component_schema(spec, "Error")
    for status, (name, _, _) in ERRORS.items():
        example_body = spec["components"]["responses"][name]["content"]["application/json"]["example"]
        jsonschema.validate(example_body, error_schema)
        assert example_body["error"]["status"] == status


def test_security_schemes_and_scopes(spec):
    schemes = spec["components"].get("securitySchemes", {})
    secured = [(p, m, o) for p, m, o in operations(spec) if o.get("security")]
    if not secured:
        pytest.skip("this app enforces no API keys")
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    for path, method, operation in secured:
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), f"{method} {path}: unknown scheme {requirement}"
        if path.startswith("/cds-services"):  # CDS Hooks clients sign a JWT; API keys do not apply
            assert operation["security"] == [{"cdsHooksJwt": []}]
            assert schemes["cdsHooksJwt"]["bearerFormat"] == "JWT"
            continue
        scope = operation["x-required-scope"]
        assert scope in ("screen", "read", "review", "admin")
        assert f"`{scope}`" in operation["description"]
    screening = spec["paths"]["/v1/screenings"]["post"]
    assert screening["x-required-scope"] == "screen"
    # Probes stay open.
    assert not spec["paths"]["/healthz"]["get"].get("security")


def test_intake_component_is_the_validating_schema(spec):
    schemas = spec["components"]["schemas"]
    body = spec["paths"]["/v1/screenings"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Intake"}
    intake = schemas["Intake"]
    assert intake["additionalProperties"] is False
    assert set(intake["required"]) == {"subject_id", "treatment"}
    assert set(intake["properties"]) == set(IntakeSchema().fields)
    # StrictBoolean is a boolean, not a string that "yes" would satisfy.
    assert schemas["Patient"]["properties"]["pregnant"] == {"type": "boolean", "nullable": True}
    systolic = schemas["Vitals"]["properties"]["systolic_bp"]
    assert (systolic["type"], systolic["minimum"], systolic["maximum"], systolic["x-unit"]) == ("integer", 50, 300, "mmHg")
    assert schemas["Treatment"]["properties"]["route"]["enum"] == ["iv_ketamine", "esketamine_nasal"]
    assert schemas["Medication"]["required"] == ["class", "name"]
    assert all(schemas[n]["additionalProperties"] is False for n in ("Treatment", "Vitals", "Medication"))
    # A nullable nested object: null or a Patient, not any object at all.
    null_branch, ref = schemas["Intake"]["properties"]["patient"]["anyOf"]
    assert null_branch["enum"] == [None] and ref == {"$ref": "#/components/schemas/Patient"}


def test_examples_come_from_the_shipped_pack(spec):
    media = spec["paths"]["/v1/screenings"]["post"]["requestBody"]["content"]["application/json"]
    shipped = {p.stem: json.loads(p.read_text()) for p in EXAMPLES.glob("*.json")}
    assert {name: ex["value"] for name, ex in media["examples"].items()} == shipped
    decisions = spec["paths"]["/v1/screenings"]["post"]["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(decisions) == set(shipped)
    assert decisions["ineligible-several"]["value"]["decision"] == "ineligible"
    assert "→ ineligible" in decisions["ineligible-several"]["summary"]
    unprocessable = spec["components"]["responses"]["UNPROCESSABLE_CONTENT"]["content"]["application/json"]["example"]
    assert {"path": "vitals.systolic_bp", "message": "must be between 50 and 300 mmHg"} in unprocessable["error"]["errors"]


# --- a client built from the description alone --------------------------------------------------

def test_a_client_built_from_the_description_can_screen(spec, openapi, live_api_url, headers):
    """Path, method, content type, auth header and body all come from /openapi.json; the answer is
    checked against the documented response schema and the documented example decision."""
    described = requests.get(f"{live_api_url}/openapi.json", timeout=10).json()
    assert described == spec
    screened = 0
    for path, method, operation in operations(described):
        media_type, media = next(iter(operation.get("requestBody", {}).get("content", {}).items()), (None, None))
        if not media or "examples" not in media:
            continue
        auth = headers if operation.get("security") else {}
        documented = operation["responses"]["200"]["content"]["application/json"]["examples"]
        for name, ex in media["examples"].items():
            response = requests.request(method.upper(), live_api_url + path, data=json.dumps(ex["value"]),
                                        headers={"Content-Type": media_type, **auth}, timeout=30)
            assert response.status_code == 200, response.text
            check(openapi, response)
            decision = response.json()
            expected = documented[name]["value"]
            assert decision["decision"] == expected["decision"], name
            assert [r["rule_id"] for r in decision["reasons"]] == [r["rule_id"] for r in expected["reasons"]]
            screened += 1
    assert screened == len(list(EXAMPLES.glob("*.json")))


@pytest.mark.parametrize("content_type, body, status", [
    ("application/json", b"{", 400),
    ("application/json", b'{"a": NaN}', 400),
    ("text/plain", b"{}", 415),
    ("application/json", b"[]", 422),
    ("application/json", json.dumps({"subject_id": "x", "treatment": {"route": "iv_ketamine", "indication": "ptsd"},
                                     "vitals": {"systolic_bp": 900}}).encode(), 422),
    ("application/json", b'{"subject_id": "' + b"x" * 300_000 + b'"}', 413),
])
def test_error_responses_are_as_documented(openapi, live_api_url, headers, content_type, body, status):
    response = requests.post(f"{live_api_url}/v1/screenings", data=body, headers={"Content-Type": content_type, **headers},
                             timeout=30)
    assert response.status_code == status, response.text
    check(openapi, response)


def test_auth_errors_are_as_documented(spec, openapi, live_api_url):
    if not spec["paths"]["/v1/screenings"]["post"].get("security"):
        pytest.skip("this app enforces no API keys")
    response = requests.post(f"{live_api_url}/v1/screenings", json=example("eligible-iv"), timeout=30)
    assert response.status_code == 401
    check(openapi, response)
    missing = requests.get(f"{live_api_url}/v1/nothing-here", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_method_not_allowed_has_the_error_body(spec, live_api_url):
    response = requests.delete(f"{live_api_url}/v1/screenings", timeout=10)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    jsonschema.validate(response.json(), exporter.component_schema(spec, "Error"))


# --- JSON Schema files for integrators -------------------------------------------------------

def test_committed_json_schemas_are_what_the_description_says(spec, tmp_path):
    assert exporter.stale(spec) == [], "schemas/json/ is stale: run `screening schemas export`"
    written = exporter.export(spec, tmp_path)
    for path in written:
        assert path.read_text() == (exporter.JSON_DIR / path.name).read_text()
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def _intake_validator() -> jsonschema.Draft202012Validator:
    document = json.loads((exporter.JSON_DIR / "intake.schema.json").read_text())
    return jsonschema.Draft202012Validator(document, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.json")))
def test_shipped_examples_validate_against_intake_schema(name):
    _intake_validator().validate(example(name))


def _broken(change) -> dict:
    raw = example("eligible-iv")
    change(raw)
    return raw


@pytest.mark.parametrize("label, raw", [
    ("systolic 900", _broken(lambda r: r["vitals"].update(systolic_bp=900))),
    ("unknown top-level field", _broken(lambda r: r.update(weight_kg=80))),
    ("unknown nested field", _broken(lambda r: r["patient"].update(name="Jane"))),
    ("'yes' for a boolean", _broken(lambda r: r["patient"].update(pregnant="yes"))),
    ("1 for a boolean", _broken(lambda r: r["patient"].update(pregnant=1))),
    ("a route that does not exist", _broken(lambda r: r["treatment"].update(route="oral"))),
    ("no treatment", _broken(lambda r: r.pop("treatment"))),
    ("a float for an integer", _broken(lambda r: r["vitals"].update(heart_rate=72.5))),
    ("a medication without class", _broken(lambda r: r.update(medications=[{"name": "x"}]))),
    ("a subject id with spaces", _broken(lambda r: r.update(subject_id="Jane Doe"))),
])
def test_invalid_intakes_fail_both_the_json_schema_and_the_service(label, raw):
    assert list(_intake_validator().iter_errors(raw)), f"{label}: the JSON Schema accepted it"
    with pytest.raises(Exception):
        IntakeSchema().load(raw)


def test_real_decisions_validate_against_decision_schema(client, headers):
    document = json.loads((exporter.JSON_DIR / "decision.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(document)
    for name in sorted(p.stem for p in EXAMPLES.glob("*.json")):
        for query in ("", "?explain=true"):
            response = client.post(f"/v1/screenings{query}", json=example(name), headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            validator.validate(response.get_json())


# --- the docs page in a real browser ----------------------------------------------------------

@pytest.mark.browser
def test_docs_page_renders_in_headless_chromium(spec, live_api_url):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: scripts/test.d/30-chromium.sh should have installed it")
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.d/30-chromium.sh installs it)")
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    errors: list[str] = []
    refused: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})

            # Everything the page needs ships with the service: any other host is refused and noted.
            def route(r):
                if r.request.url.startswith(live_api_url) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The page's Content-Security-Policy must not block anything Swagger UI does.
            page.on("console", lambda msg: refused.append(msg.text)
                    if "Content Security Policy" in msg.text else None)
            response = page.goto(f"{live_api_url}/docs", wait_until="networkidle")
            docs_headers = response.headers
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            page.screenshot(path=str(ARTIFACTS / "docs-page.png"), full_page=True)
            # Open the screening operation: its request body example is the shipped intake.
            page.locator("#operations-screenings-post_v1_screenings .opblock-summary").click()
            page.wait_for_selector("#operations-screenings-post_v1_screenings .body-param__example, "
                                   "#operations-screenings-post_v1_screenings .example", timeout=15_000)
            opened = page.locator("#operations-screenings-post_v1_screenings").inner_text()
            page.screenshot(path=str(ARTIFACTS / "docs-page-screening.png"), full_page=True)
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert not outside, f"the docs page reached outside the service: {outside}"
    assert not errors, errors
    assert "script-src 'self'" in docs_headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs_headers["content-security-policy"]
    assert docs_headers["x-frame-options"] == "DENY"
    assert not refused, refused
    assert "Ketamine screening service" in title
    described = {p.replace("\u200b", "") for p in paths}
    assert {path for path, _, _ in operations(spec)} <= described
    assert "Screen one intake." in opened
    assert "pt-0001" in opened  # the eligible-iv example's subject
