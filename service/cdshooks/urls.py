"""The URLs CDS Hooks trusts, all from configuration: this service's public base URL (the JWT
audience and the card links) and, per issuer, the FHIR servers its `fhirServer` may name.

A URL a caller sends is compared with the configured ones after the same normalisation
(lower-case scheme and host, no trailing slash) and must then be *equal*: a prefix, a sibling
path, dot segments, user info, a query or a fragment never match.
"""
from __future__ import annotations

from urllib.parse import urlsplit


def normalise_base_url(raw: str) -> str | None:
    """``scheme://host[:port][/path]`` with scheme and host lower-cased and no trailing slash;
    None for anything else (not http(s), no host, user info, query, fragment, whitespace,
    backslashes, dot segments)."""
    if not isinstance(raw, str) or any(c.isspace() or c == "\\" or ord(c) < 0x20 for c in raw):
        return None
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        return None
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc
            or parts.query or parts.fragment or "?" in raw or "#" in raw):
        return None
    path = parts.path.rstrip("/")
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme.lower()}://{netloc}{path}"


def public_base_url(raw: str | None) -> str | None:
    """``SCREENING_CDS_BASE_URL``; None when unset. A malformed one stops start-up with the
    variable named."""
    raw = (raw or "").strip()
    if not raw:
        return None
    normal = normalise_base_url(raw)
    if normal is None:
        raise SystemExit(f"configuration: SCREENING_CDS_BASE_URL must be the service's public base URL, "
                         f"like https://cds.example.org, got {raw!r}")
    return normal


def fhir_server_allowed(url: object, allowed: tuple[str, ...]) -> bool:
    """Is the `fhirServer` a client named one of the FHIR servers configured for its issuer?"""
    normal = normalise_base_url(url) if isinstance(url, str) else None
    return normal is not None and normal in {normalise_base_url(a) for a in allowed}
