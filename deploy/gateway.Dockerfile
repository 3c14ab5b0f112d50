# syntax=docker/dockerfile:1
# The gateway: the HTTP API, tus and the upload page (gunicorn, `python -m gateway`) on :5000.
# Build from the repository root:  docker build -f deploy/gateway.Dockerfile -t upload-gateway .

# ---- page: the browser library the upload page serves (tus-js-client), as package-lock.json pins it ----
FROM node:22-bookworm-slim AS page
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---- builder: the venv and the generated protos; nothing of this stage but them is kept ----
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN python -m venv /opt/venv
# The gateway's dependencies first, in their own layer: rebuilt only when the lock or
# pyproject.toml changes. They are pyproject.toml's `dependencies` and its `gateway` extra,
# nothing of the other services', the tests' or the benchmarks', at the versions
# requirements.lock pins (a constraint: the lock covers every extra, so it is never installed
# whole).
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['gateway'], sep='\n')" > runtime.txt \
 && pip install --no-cache-dir -c requirements.lock -r runtime.txt
COPY README.md setup.py ./
COPY protos/ protos/
COPY gateway/ gateway/
# The project with its extra, editable as `make install` does: the code stays in /app, where
# gateway/http/page.py looks for node_modules beside it, and the package metadata (the version
# /openapi.json reports, plugin entry points) lands in the venv. pip finds the extra's
# dependencies installed above; pip check proves nothing is missing. Building the project
# generates the protos (setup.py) in pip's isolated build environment, with the grpcio-tools
# that pyproject.toml's [build-system] pins: grpcio-tools never reaches the venv.
RUN pip install --no-cache-dir -c requirements.lock -e ".[gateway]" \
 && pip check \
 && python -m compileall -q protos gateway

# ---- runtime ----
FROM python:3.11-slim-bookworm
# No apt packages: the gateway needs no system library beyond the base image's.
# DATA_DIR (/data) belongs to the service user: temp files of uploads in flight, unfinished
# tus uploads, and with STORAGE=local the files and the SQLite database (mount a volume there).
RUN groupadd --system --gid 10001 upload \
 && useradd --system --uid 10001 --gid upload --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin upload \
 && install -d -o 10001 -g 10001 -m 0750 /data
# Root owns the code: the service cannot change what it runs.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
COPY --from=page /src/node_modules/tus-js-client/dist /app/node_modules/tus-js-client/dist
COPY deploy/healthcheck.py /app/healthcheck.py
WORKDIR /app
# GATEWAY_HOST=0.0.0.0: a container is reached through its network interface, never its
# loopback, and the gateway refuses AUTH=off there, so the image serves AUTH=token. Give it
# ADMIN_TOKEN and SECRET_KEY from a secret at run time (compose .env, a Kubernetes Secret),
# never in the image. The gRPC targets name the services as compose.yaml and deploy/k8s do.
# MALLOC_ARENA_MAX=2: python -m gateway sets the same cap itself; here it also holds for tools
# run in the image (flask --app gateway ...).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=5000 \
    AUTH=token \
    DATA_DIR=/data \
    VALIDATOR_ADDR=dns:///validator:50051 \
    THUMBNAIL_ADDR=dns:///thumbnail:50052
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
USER 10001:10001
EXPOSE 5000
# /healthz (up), not /readyz: a gRPC service being down must not get the gateway restarted.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "http", "http://127.0.0.1:5000/healthz"]
CMD ["python", "-m", "gateway"]
