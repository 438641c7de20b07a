"""Helpers for the OpenAPI, docs-page and fuzzing tests: an API key, a loopback server."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from flask import Flask
from werkzeug.serving import make_server


def admin_headers(app: Flask) -> dict[str, str]:
    """A fresh key with every scope, in the header the description documents."""
    from tests.conftest import bearer

    return bearer(app, ["admin"], "openapi-tests")


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """The app on 127.0.0.1 on a free port, in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="openapi-live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
