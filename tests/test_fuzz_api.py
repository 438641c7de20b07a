"""schemathesis over the whole OpenAPI description, against the WSGI app.

Every documented operation gets schema-valid and schema-invalid requests (bounded:
SCREENING_FUZZ_EXAMPLES per operation, 60 by default). None may get a server error, an
undocumented status or content type, a body that does not match its documented schema, or
(for an invalid request) a 2xx.

Driven through schemathesis's Python API rather than its pytest plugin: the plugin's lazy
fixture loader does not run on pytest 9.
"""
from __future__ import annotations

import os

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.cdshooks.jwt_auth import Issuer, Verifier
from tests.conftest import app_settings
from tests.cdshooks_support import ISSUER, Signer
from tests.openapi_support import admin_headers

FUZZ_EXAMPLES = int(os.environ.get("SCREENING_FUZZ_EXAMPLES", "60"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
# Reloading the pack lints, compiles and tests it (seconds per call); its own tests cover it.
NOT_FUZZED = {("POST", "/v1/admin/reload")}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """An app of its own: its CDS Hooks verifier trusts the fuzzer's signing key."""
    app = create_app(app_settings(tmp_path_factory.mktemp("fuzz-app")))
    state = app.extensions.get("cds_hooks")
    signer = None
    if state is not None:
        signer = Signer()
        jwks = signer.write_jwks(tmp_path_factory.mktemp("fuzz-jwks"))
        state.verifier = Verifier(issuers={ISSUER: Issuer(iss=ISSUER, jwks_file=str(jwks))})
        state.base_url = "http://localhost"  # SCREENING_CDS_BASE_URL: the audience the fuzzer signs for
    return app, signer


def _headers_for(case, api_key: dict, signer) -> dict:
    """What the operation's documented security asks for: an API key, or a JWT signed for the
    exact endpoint URL (CDS Hooks)."""
    requirements = case.operation.definition.raw.get("security") or []
    if any("cdsHooksJwt" in r for r in requirements) and signer is not None:
        return {"Authorization": f"Bearer {signer.token('http://localhost' + case.formatted_path)}"}
    return api_key if requirements else {}


def _fuzz(operation, api_key: dict, signer) -> tuple[int, list[str]]:
    """Run the bounded Hypothesis search for one operation; (requests made, failure texts)."""
    calls = 0
    failures: list[str] = []
    strategy = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                         operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def search(case):
        nonlocal calls
        calls += 1
        response = case.call(headers=_headers_for(case, api_key, signer))
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # a FailureGroup; keep searching, report them all
            text = f"{operation.method.upper()} {operation.path}: {exc}"
            if len(failures) < 5 and text not in failures:
                failures.append(text[:3000])

    search()
    return calls, failures


def test_no_server_errors_and_responses_as_documented(fuzz_app):
    app, signer = fuzz_app
    api_key = admin_headers(app)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5, "the description lost its operations"
    calls: dict[str, int] = {}
    failures: list[str] = []
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in NOT_FUZZED:
            continue
        calls[label], found = _fuzz(operation, api_key, signer)
        failures.extend(found)
    assert not failures, "\n\n".join(failures)
    # Past authentication: the handlers themselves were fuzzed, not only the 401.
    assert api_key, "the app has no API-key store to make a fuzzing key in"
    assert all(n > 0 for n in calls.values()), calls
