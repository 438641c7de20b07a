"""Operations: Prometheus metrics (``metrics``), JSON logs (``logging``) and the per-request
hooks that feed both (``hooks.init_app``). Nothing here sees intake values: request hooks read
the Decision the screening blueprint leaves on ``flask.g``, never the request body.

Kept import-free: the gunicorn config imports ``logging`` in the master, which must not import
prometheus_client before PROMETHEUS_MULTIPROC_DIR is set.
"""
