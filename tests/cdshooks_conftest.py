"""Fixtures of the CDS Hooks tests (tests/test_cdshooks_*.py), loaded by tests/conftest.py."""
from __future__ import annotations

import dataclasses

import pytest

from service.app import create_app
from service.cdshooks.blueprint import CdsHooksState
from service.cdshooks.jwt_auth import Issuer, Verifier
from tests.cdshooks_support import ISSUER, Signer
from tests.conftest import app_settings

BASE_URL = "http://localhost"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def cds_app(tmp_path_factory, signer):
    tmp = tmp_path_factory.mktemp("cds")
    app = create_app(app_settings(tmp))
    jwks = signer.write_jwks(tmp)
    # The public base URL is configuration (SCREENING_CDS_BASE_URL), never the Host header.
    app.extensions["cds_hooks"] = CdsHooksState(
        verifier=Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=str(jwks))}), base_url=BASE_URL)
    return app


@pytest.fixture
def cds(cds_app, signer):
    """A client that signs every call for the URL it calls, as a CDS client does."""
    client = cds_app.test_client()

    class Caller:
        app = cds_app

        def post(self, path: str, body: dict, **token_args):
            token = signer.token(f"http://localhost{path}", **token_args)
            return client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

        def get(self, path: str, **token_args):
            token = signer.token(f"http://localhost{path}", **token_args)
            return client.get(path, headers={"Authorization": f"Bearer {token}"})

        raw = client

        def trust_fhir_server(self, base: str) -> None:
            """Configure ``base`` as the FHIR server of the test issuer (SCREENING_CDS_ISSUERS
            fhir_servers): the only kind of fhirServer the service fetches from."""
            verifier = cds_app.extensions["cds_hooks"].verifier
            verifier.issuers[ISSUER] = dataclasses.replace(verifier.issuers[ISSUER], fhir_servers=(base,))

    return Caller()
