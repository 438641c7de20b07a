# durable-rules 2.0.28 builds from source and does not import on Python 3.13: stay on 3.12.
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin screening
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY rules ./rules
# The only place the service writes (the SQLite log by default, the last good rule pack): a
# volume, so the root filesystem can be mounted read-only (`docker run --read-only --tmpfs /tmp
# -v screening-data:/data …`; /tmp holds gunicorn's metric samples).
RUN mkdir /data && chown screening:screening /data
VOLUME ["/data"]
ENV SCREENING_RULES_DIR=/app/rules/ketamine-screening \
    SCREENING_STATE_DIR=/data \
    SCREENING_BIND=0.0.0.0:8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER screening
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["screening", "serve"]
