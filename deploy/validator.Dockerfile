# syntax=docker/dockerfile:1
# The validator: gRPC upload.v1.Validator (+ grpc.health.v1, reflection) on :50051.
# Build from the repository root:  docker build -f deploy/validator.Dockerfile -t upload-validator .

# ---- builder: the venv and the generated protos; nothing of this stage but them is kept ----
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN python -m venv /opt/venv
# The validator's dependencies first, in their own layer: rebuilt only when the lock or
# pyproject.toml changes. They are pyproject.toml's `dependencies` and its `validator` extra,
# nothing of the other services', the tests' or the benchmarks', at the versions
# requirements.lock pins (a constraint: the lock covers every extra, so it is never installed
# whole).
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['validator'], sep='\n')" > runtime.txt \
 && pip install --no-cache-dir -c requirements.lock -r runtime.txt
COPY README.md setup.py ./
COPY protos/ protos/
COPY validator_service/ validator_service/
# The other gRPC service's code too, unused but for its hookspecs: every service's plugin manager
# knows both services' hooks, so that one plugin package may serve both (protos/plugins.py).
COPY thumbnail_service/ thumbnail_service/
# The project with its extra, editable as `make install` does: the code stays in /app, the
# package metadata (version, plugin entry points) lands in the venv. pip finds the extra's
# dependencies installed above; pip check proves nothing is missing. Building the project
# generates the protos (setup.py) in pip's isolated build environment, with the grpcio-tools
# that pyproject.toml's [build-system] pins: grpcio-tools never reaches the venv.
RUN pip install --no-cache-dir -c requirements.lock -e ".[validator]" \
 && pip check \
 && python -m compileall -q protos validator_service thumbnail_service

# ---- runtime ----
FROM python:3.11-slim-bookworm
# libmagic1 (with its magic database): python-magic's library, the content check. Pinned to
# bookworm's version, which is the libmagic the README's MIME tables were written against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1=1:5.44-3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 upload \
 && useradd --system --uid 10001 --gid upload --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin upload
# Root owns the code: the service cannot change what it runs.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
COPY deploy/healthcheck.py /app/healthcheck.py
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VALIDATOR_LISTEN=[::]:50051
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
USER 10001:10001
# gRPC, and the Prometheus metrics (VALIDATOR_METRICS_PORT's default; bound on the gRPC interface).
EXPOSE 50051 9101
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "grpc", "127.0.0.1:50051"]
CMD ["python", "-m", "validator_service"]
