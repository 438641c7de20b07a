"""Authenticating CDS clients: the signed JWT every CDS Hooks call carries (spec "Trusting CDS
Clients"), verified with PyJWT.

- alg ES384 or RS384 only: `none` and every HMAC algorithm are refused before any key is looked up.
- `iss` must be an allow-listed issuer; its keys come from that issuer's JWKS (a URL or a file),
  or from the `jku` header only when that URL is allow-listed for the same issuer.
- The key must be of the kind the algorithm names (an EC P-384 key for ES384, an RSA key for
  RS384): a header that names the other algorithm is refused (401), not handed to PyJWT.
- `aud` must be the exact URL of the endpoint called; `exp` and `iat` are required, must be JSON
  numbers (RFC 7519 NumericDate: a numeric string is refused) and are checked with a small
  leeway; `jti` is required and a token is accepted once.
- Seen `jti`s are kept in the decision log's database until their `exp` (plus leeway), so a
  replay is refused by whichever worker or instance it reaches (in memory only where there is no
  store). Tokens whose `exp` is further away than ``max_lifetime`` are refused, which bounds both.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWKClient, PyJWKSet

from service.cdshooks.urls import normalise_base_url
from service.config import CdsHooksSettings
from service.store.base import JtiStore

ALLOWED_ALGORITHMS = ("ES384", "RS384")
# NumericDates past this (year 5138) are not dates a short-lived token carries; it also keeps a
# huge integer from overflowing float().
_MAX_NUMERIC_DATE = 10**11


def _key_fits(alg: str, key: Any) -> bool:
    """The key is of the kind the JWT's algorithm needs (PyJWT raises TypeError otherwise)."""
    if alg == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    return isinstance(key, rsa.RSAPublicKey)


def _numeric_date(claims: dict, name: str) -> float:
    """A NumericDate claim: a JSON number (RFC 7519 section 2), never a numeric string."""
    value = claims[name]
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (isinstance(value, int) or math.isfinite(value)) or abs(value) > _MAX_NUMERIC_DATE):
        raise AuthError(f"The JWT claim '{name}' must be a number of seconds since the epoch (NumericDate).")
    return float(value)


class AuthError(Exception):
    """The call is not authenticated (401); the message says why, without echoing the token."""


@dataclass(frozen=True)
class Issuer:
    iss: str
    jwks_url: str | None = None
    jwks_file: str | None = None
    jku: tuple[str, ...] = ()      # jku header values accepted for this issuer
    # The FHIR servers (normalised base URLs) this issuer's `fhirServer` may name: the only
    # places its `fhirAuthorization` token is ever sent. None configured: nothing is fetched.
    fhir_servers: tuple[str, ...] = ()


def _fhir_servers(iss: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SystemExit(f"configuration: SCREENING_CDS_ISSUERS[{iss!r}].fhir_servers must be a list of base URLs")
    out = []
    for url in value:
        normal = normalise_base_url(url) if isinstance(url, str) else None
        if normal is None:
            raise SystemExit(f"configuration: SCREENING_CDS_ISSUERS[{iss!r}].fhir_servers: {url!r} is not an "
                             "http(s) base URL (no user info, query or fragment)")
        out.append(normal)
    return tuple(out)


def parse_issuers(raw: str | None) -> dict[str, Issuer]:
    """``SCREENING_CDS_ISSUERS``: a JSON object issuer -> a JWKS URL, a JWKS file path, or
    ``{"jwks_url": ..., "jwks_file": ..., "jku": [...], "fhir_servers": [...]}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SystemExit(f"configuration: SCREENING_CDS_ISSUERS is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit("configuration: SCREENING_CDS_ISSUERS must be a JSON object of issuer -> JWKS")
    out = {}
    for iss, spec in data.items():
        if isinstance(spec, str):
            spec = {"jwks_url": spec} if spec.startswith(("http://", "https://")) else {"jwks_file": spec}
        if not isinstance(spec, dict) or not (spec.get("jwks_url") or spec.get("jwks_file") or spec.get("jku")):
            raise SystemExit(f"configuration: SCREENING_CDS_ISSUERS[{iss!r}] names no JWKS")
        out[iss] = Issuer(iss, spec.get("jwks_url"), spec.get("jwks_file"), tuple(spec.get("jku") or ()),
                          _fhir_servers(iss, spec.get("fhir_servers")))
    return out


class JtiCache:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def use_once(self, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if key in self._seen and self._seen[key] > now:
                return False
            self._seen[key] = expires_at
            return True


class StoreJtiCache:
    """``use_once`` over the shared database (service.store.base.JtiStore)."""

    def __init__(self, store: JtiStore) -> None:
        self._store = store

    def use_once(self, key: str, expires_at: float, now: float) -> bool:
        # Hashed: a fixed-size key, and the issuer/jti text (with its NUL separator) never
        # reaches a database column.
        return self._store.use_jti_once(hashlib.sha256(key.encode("utf-8")).hexdigest(), expires_at, now)


@dataclass
class Verifier:
    issuers: dict[str, Issuer]
    leeway: int = 30
    max_lifetime: int = 3600
    jtis: JtiCache = field(default_factory=JtiCache)
    _clients: dict[str, PyJWKClient] = field(default_factory=dict)
    _files: dict[str, PyJWKSet] = field(default_factory=dict)

    def verify(self, authorization: str | None, audience: str) -> dict:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("A CDS Hooks call must carry the client's JWT: Authorization: Bearer <JWT>.")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("The bearer token is not a JWT.") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"JWT algorithm {alg!r} is not accepted; use ES384 or RS384.")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("The JWT issuer is not trusted by this service.")
        key = self._key(issuer, header)
        if not _key_fits(alg, key):
            raise AuthError(f"The issuer's key for this kid is not a key for {alg}.")
        now = time.time()
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=audience, issuer=issuer.iss, leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("The JWT has expired.") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"The JWT audience must be this endpoint's URL: {audience}") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("The JWT is not valid yet (iat in the future).") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"The JWT lacks the required claim '{exc.claim}'.") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"The JWT is not valid: {type(exc).__name__}.") from None
        except (TypeError, ValueError):  # a key PyJWT cannot use for this algorithm
            raise AuthError("The JWT is not valid: its key does not fit its algorithm.") from None
        # PyJWT reads iat/exp with int(), which takes "1700000000": the claims must be numbers.
        iat, exp = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
        if "nbf" in claims:
            _numeric_date(claims, "nbf")
        if iat > now + self.leeway:
            raise AuthError("The JWT is not valid yet (iat in the future).")
        if exp - now > self.max_lifetime:
            raise AuthError(f"The JWT lives longer than {self.max_lifetime} seconds; CDS Hooks JWTs are short-lived.")
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise AuthError("The JWT jti must be a non-empty string.")
        if not self.jtis.use_once(f"{iss}\x00{claims['jti']}", exp + self.leeway, now):
            raise AuthError("The JWT has been used before (jti replay).")
        return claims

    def _key(self, issuer: Issuer, header: dict) -> Any:
        kid = header.get("kid")
        jku = header.get("jku")
        try:
            if jku is not None:
                if jku not in issuer.jku and jku != issuer.jwks_url:
                    raise AuthError("The JWT jku is not allow-listed for its issuer.")
                return self._client(jku).get_signing_key(kid).key
            if issuer.jwks_file:
                return self._from_file(issuer.jwks_file, kid)
            if issuer.jwks_url:
                return self._client(issuer.jwks_url).get_signing_key(kid).key
        except AuthError:
            raise
        except (jwt.PyJWKClientError, jwt.PyJWTError, OSError, ValueError, KeyError):
            raise AuthError("No key of the issuer's JWK Set matches the JWT's kid.") from None
        raise AuthError("The issuer has no JWK Set configured.")

    def _client(self, url: str) -> PyJWKClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = PyJWKClient(url, cache_keys=True, lifespan=300, timeout=2)
        return client

    def _from_file(self, path: str, kid: str | None) -> Any:
        keyset = self._files.get(path)
        if keyset is None:
            keyset = self._files[path] = PyJWKSet.from_dict(json.loads(Path(path).read_text()))
        for key in keyset.keys:
            if key.key_id == kid:
                return key.key
        raise KeyError(kid)


def verifier_from_settings(settings: CdsHooksSettings) -> Verifier:
    return Verifier(issuers=parse_issuers(settings.issuers), leeway=settings.jwt_leeway)
