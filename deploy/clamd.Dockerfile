# syntax=docker/dockerfile:1
# clamd (with freshclam and clamdscan) for the validator's ClamAV rule: Debian's clamav-daemon,
# the clamd the tests run against, as the images' user 10001 with a read-only root filesystem.
# Build from the repository root:  docker build -f deploy/clamd.Dockerfile -t upload-clamd .
# No signatures are baked in: freshclam downloads them into /var/lib/clamav at start
# (deploy/README.md, "ClamAV").
FROM debian:bookworm-slim
# bookworm's clamav line (bookworm-security carries its updates); ca-certificates for
# freshclam's HTTPS downloads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clamav-daemon=1.4.* clamav-freshclam=1.4.* clamdscan=1.4.* \
    ca-certificates=20230311* \
 && rm -rf /var/lib/apt/lists/* /var/lib/clamav/* /var/log/clamav/* \
 && groupadd --system --gid 10001 upload \
 && useradd --system --uid 10001 --gid upload --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin upload \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/clamav /run/clamav
# Root owns the configuration: clamd cannot change its own limits.
COPY deploy/clamd/clamd.conf deploy/clamd/freshclam.conf /etc/clamav/
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
USER 10001:10001
# clamd answers PING on its socket (clamdscan reads the socket's path from clamd.conf).
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["clamdscan", "--ping", "1"]
# The freshclam containers run this image with their own command (compose.yaml, k8s/validator.yaml).
CMD ["clamd", "--foreground"]
