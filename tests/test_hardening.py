"""Red-team findings of issue 18 outside CDS Hooks (those are in test_cdshooks_trust.py and
test_cdshooks_jwt.py; the append-only triggers in test_store.py): each test failed on the code
as it was found."""
from __future__ import annotations

import base64
import json

import pytest

from tests.dbfixtures import database_url, db_app, db_client  # noqa: F401 - fixtures (SQLite and PostgreSQL)
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
