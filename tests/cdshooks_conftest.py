"""Fixtures of the CDS Hooks tests (tests/test_cdshooks_*.py), loaded by tests/conftest.py."""
from __future__ import annotations

import pytest

from service.app import create_app
from service.cdshooks.blueprint import CdsHooksState
from service.cdshooks.jwt_auth import Issuer, Verifier
from tests.cdshooks_support import ISSUER, Signer
from tests.conftest import app_settings


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def cds_app(tmp_path_factory, signer):
    tmp = tmp_path_factory.mktemp("cds")
    app = create_app(app_settings(tmp))
    jwks = signer.write_jwks(tmp)
    app.extensions["cds_hooks"] = CdsHooksState(
        verifier=Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=str(jwks))}))
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

    return Caller()
