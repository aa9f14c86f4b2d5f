# The jobpulse server's image. No image is built by this repository's CI (no registry is reachable from it):
# tests/deploy/test_recipe.py runs this file's install, migrate, serve and HEALTHCHECK commands instead, as
# docs/operations.md ("Deploying") says.
#
#   docker build -t jobpulse-server .
#   docker run -e JOBPULSE_DATABASE_URL=postgresql://... jobpulse-server migrate
#   docker run -p 50051:50051 -p 8080:8080 -e JOBPULSE_DATABASE_URL=postgresql://... jobpulse-server

# Build stage: both distributions and their dependencies into a venv, copied whole into the final stage
# (httptools, asyncpg and grpcio come as wheels: no compiler is needed).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY LICENSE ./
COPY client/ client/
COPY service/ service/
RUN python -m venv /opt/jobpulse \
    && /opt/jobpulse/bin/pip install --no-cache-dir ./client ./service

# Final stage: the venv, a user of its own, nothing else.
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/jobpulse jobpulse
COPY --from=build /opt/jobpulse /opt/jobpulse
# Listen on every interface of the container: gRPC on 50051, the HTTP side (/healthz, /readyz, /metrics,
# SSE, the dashboard) on 8080. A non-loopback address serves only once an API key exists (keys create),
# or with JOBPULSE_INSECURE=true.
ENV PATH=/opt/jobpulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    JOBPULSE_HOST=0.0.0.0 \
    JOBPULSE_PORT=50051 \
    JOBPULSE_HTTP_PORT=8080 \
    JOBPULSE_LOG_FORMAT=json \
    JOBPULSE_DATABASE_URL=sqlite:////var/lib/jobpulse/jobpulse.db
USER 10001:10001
WORKDIR /var/lib/jobpulse
EXPOSE 50051 8080
# Ready: the HTTP side answers /readyz with 200 (503 while the database does not answer).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
ENTRYPOINT ["jobpulse-server"]
CMD ["serve"]
