"""gunicorn settings for `screening serve`, all from the environment (see the README table)."""
import os

bind = os.environ.get("SCREENING_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("SCREENING_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("SCREENING_WORKER_TIMEOUT", "30"))
# On SIGTERM, workers finish the requests they hold for up to this long.
graceful_timeout = int(os.environ.get("SCREENING_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# Bounded request lines and headers; bodies are bounded by the app (413).
limit_request_line = 8190
limit_request_fields = 100
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SCREENING_LOG_LEVEL", "info")
