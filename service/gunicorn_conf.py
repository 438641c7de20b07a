"""gunicorn settings for `screening serve`, all from the environment (see the README table)."""
import os
import shutil
import tempfile

# Metrics from every worker are summed at scrape time from files in this directory. It has to be
# in the environment before any worker imports prometheus_client, so it is settled here, in the
# master, before the fork; samples a previous run left are dropped (counters start at 0).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="screening-metrics-")
    os.environ["_SCREENING_METRICS_DIR_TEMPORARY"] = "1"  # ours to remove on exit
if os.environ.get("_SCREENING_METRICS_DIR_PREPARED_BY") != str(os.getpid()):
    # Once per master: a SIGHUP re-reads this file, and must not wipe live workers' samples.
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(_metrics_dir, exist_ok=True)
    for _name in os.listdir(_metrics_dir):
        if _name.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, _name))
    os.environ["_SCREENING_METRICS_DIR_PREPARED_BY"] = str(os.getpid())

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
# The app logs one JSON line per request itself (request id, route template, decision), so
# gunicorn's access log stays off; gunicorn's own messages are JSON lines too.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("SCREENING_LOG_LEVEL", "info")
from service.observability.logging import gunicorn_logconfig  # noqa: E402 - after the metrics dir

logconfig_dict = gunicorn_logconfig(loglevel)
# gunicorn 24+ opens a control socket at a fixed per-user path: a second instance on the same
# host (tests, replicas sharing a node) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """Refuse to start on a pack that fails lint or compile (its rule tests gate every reload;
    `screening rules test` gates a release); once started, workers that (re)boot on a broken
    directory fall back to the last good pack. The ruleset loaded here is kept for the workers
    this master forks (service.reload.preload): they do not load or compile it again."""
    from service.config import SERVING_ENV, Settings
    from service.reload import load_or_fall_back, preload, save_last_good

    settings = Settings.from_env()
    ruleset, _ = load_or_fall_back(settings.rules_dir, settings.engine_backend, settings.state_dir,
                                   cache=settings.pack_cache())
    if settings.rules_cache and preload(ruleset, settings.rules_dir, settings.engine_backend):
        server.log.info("ruleset loaded before the fork: workers share it")
    try:
        save_last_good(settings.rules_dir, settings.state_dir)
    except OSError as exc:
        server.log.warning("could not keep a copy of the rules: %s", exc)
    os.environ[SERVING_ENV] = "1"
    server.log.info("ruleset %s %s %s", ruleset.pack.name, ruleset.pack.version, ruleset.pack.digest)
    # Imported once here, before the fork, rather than by every worker: the ICD-10-CM tables CDS
    # Hooks reads (simple_icd_10_cm parses its XML at import, about 2.5 s and 180 MiB a process,
    # most of a worker's start). Plain data: nothing in it is tied to the process.
    import service.cdshooks.terminology  # noqa: F401 - imported for its side effect, shared by the fork


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters and histograms keep counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("_SCREENING_METRICS_DIR_TEMPORARY") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
