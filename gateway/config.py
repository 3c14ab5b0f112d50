"""Gateway settings: every one an environment variable (see the README table)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

from protos.tls import ClientTls

# expires_in is kept in a 32-bit column (tus) and must stay far from datetime's
# year 9999: FILE_MAX_TTL may not pass this (68 years).
LARGEST_FILE_TTL = 2**31 - 1


# The validator's work slots by default (validator_service's VALIDATOR_WORKERS).
VALIDATOR_SLOTS = 64


def cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: its CPU affinity (a container's cpuset, taskset), and
    no more than its cgroup's CPU quota rounded up (a Kubernetes CPU limit of 2 on a 64-core
    node is 2, not 64)."""
    try:
        count = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(count, math.ceil(quota))) if quota else count


def _cgroup_quota(cgroup: str) -> float | None:
    """CPUs the cgroup may use (cgroup v2's cpu.max, or v1's cfs quota and period); None: no limit."""
    try:
        with open(os.path.join(cgroup, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(cgroup, "cpu", "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(cgroup, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def from_env(env: Mapping[str, str] | None = None) -> dict:
    env = os.environ if env is None else env

    def number(name: str, default, kind=int):
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise SystemExit(f"{name} must be a number, got {raw!r}.") from None

    def flag(name: str, default: bool) -> bool:
        raw = env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"{name} must be on or off (1/0, true/false), got {raw!r}.")

    auth = env.get("AUTH", "off").strip().lower() or "off"
    if auth not in ("off", "token"):
        raise SystemExit(f"AUTH must be off or token, got {auth!r}.")

    image_metadata = env.get("IMAGE_METADATA", "strip-location").strip().lower() or "strip-location"
    if image_metadata not in ("keep", "strip-location", "strip-all"):
        raise SystemExit(f"IMAGE_METADATA must be keep, strip-location or strip-all, got {image_metadata!r}.")

    storage = env.get("STORAGE", "local").strip().lower() or "local"
    if storage not in ("local", "s3"):
        raise SystemExit(f"STORAGE must be local or s3, got {storage!r}.")
    bucket = env.get("S3_BUCKET", "").strip()
    if storage == "s3" and not bucket:
        raise SystemExit("STORAGE=s3 needs S3_BUCKET, the name of an existing bucket to keep the files in.")
    part_size = number("S3_PART_SIZE", 8 * 1024 * 1024)
    if not 5 * 1024 * 1024 <= part_size <= 5 * 1024 ** 3:
        raise SystemExit(f"S3_PART_SIZE must be from 5 MiB (5242880, S3's smallest part) to 5 GiB, got {part_size}.")
    addressing = env.get("S3_ADDRESSING_STYLE", "").strip().lower()
    if addressing not in ("", "auto", "path", "virtual"):
        raise SystemExit(f"S3_ADDRESSING_STYLE must be auto, path or virtual, got {addressing!r}.")
    # SigV4 presigned URLs live at most a week: a longer one is signed, then refused by the bucket
    # on every download.
    presigned_ttl = number("S3_PRESIGNED_TTL", 300)
    if not 1 <= presigned_ttl <= 7 * 86400:
        raise SystemExit(f"S3_PRESIGNED_TTL must be from 1 to 604800 seconds (a week, SigV4's longest), "
                         f"got {presigned_ttl}.")
    # 0 or less: every lock is expired as soon as taken (two writers at once) and renewed in a busy loop.
    lock_expiry = number("TUS_LOCK_EXPIRY", 15.0, float)
    if not 0 < lock_expiry <= 86400:
        raise SystemExit(f"TUS_LOCK_EXPIRY must be more than 0 and at most 86400 seconds, got {lock_expiry}.")

    # Each new connection past the cap closes the one that waited longest: fewer than the
    # threads would close connections that are being served.
    connections = number("GATEWAY_CONNECTIONS", 1000)
    if connections < number("GATEWAY_THREADS", 16):
        raise SystemExit(f"GATEWAY_CONNECTIONS ({connections}) must be at least GATEWAY_THREADS "
                         f"({number('GATEWAY_THREADS', 16)}): every thread serves a connection.")

    # One per core, but no more threads in all than one validator's slots (VALIDATOR_WORKERS' default,
    # 64): a multipart upload holds a slot while it streams, and one past them is refused (503).
    workers = number("GATEWAY_WORKERS", min(cores(), max(1, VALIDATOR_SLOTS // number("GATEWAY_THREADS", 16))))
    if not 1 <= workers <= 256:
        raise SystemExit(f"GATEWAY_WORKERS must be from 1 to 256 worker processes, got {workers}.")

    caps = {"MAX_SHARES_PER_FILE": number("MAX_SHARES_PER_FILE", 20),
            "MAX_TOKENS_PER_USER": number("MAX_TOKENS_PER_USER", 100)}
    for name, value in caps.items():
        if value < 0:
            raise SystemExit(f"{name} must be 0 (no limit) or more, got {value}.")

    webhooks = webhook_urls(env.get("WEBHOOK_URLS", ""))
    webhook_secret = env.get("WEBHOOK_SECRET", "")
    if webhooks and not webhook_secret.strip():
        raise SystemExit("WEBHOOK_URLS needs WEBHOOK_SECRET, the key each POST is signed with "
                         "(X-Upload-Signature-256), so that receivers can tell the gateway's events from forged ones: "
                         "e.g. WEBHOOK_SECRET=$(openssl rand -hex 32), the same value on the receivers.")
    webhook_timeout = number("WEBHOOK_TIMEOUT", 10.0, float)
    if not 0 < webhook_timeout <= 300:
        raise SystemExit(f"WEBHOOK_TIMEOUT must be more than 0 and at most 300 seconds, got {webhook_timeout}.")
    retry_max_delay = number("EVENT_RETRY_MAX_DELAY", 600.0, float)
    if not 1 <= retry_max_delay <= 86400:
        raise SystemExit(f"EVENT_RETRY_MAX_DELAY must be from 1 to 86400 seconds, got {retry_max_delay}.")
    refusals_keep = number("REFUSALS_KEEP_DAYS", 30.0, float)
    if not 0 <= refusals_keep <= 3650:
        raise SystemExit(f"REFUSALS_KEEP_DAYS must be from 0 (record none) to 3650 days, got {refusals_keep}.")
    give_up_after = number("EVENT_GIVE_UP_AFTER", 3 * 86400.0, float)
    if give_up_after < 0:
        raise SystemExit(f"EVENT_GIVE_UP_AFTER must be 0 (never) or a number of seconds, got {give_up_after}.")

    data_dir = os.path.abspath(env.get("DATA_DIR", "./data"))
    max_file_size = number("MAX_FILE_SIZE", 50 * 1024 * 1024)
    file_ttl, file_max_ttl = number("FILE_TTL", 0), number("FILE_MAX_TTL", 365 * 86400)
    if not 1 <= file_max_ttl <= LARGEST_FILE_TTL:
        raise SystemExit(f"FILE_MAX_TTL must be a number of seconds from 1 to {LARGEST_FILE_TTL}, got {file_max_ttl}.")
    if storage == "s3" and max_file_size > 10000 * part_size:
        # S3 takes at most 10000 parts per multipart upload: a larger file would fail at its 10001st part.
        raise SystemExit(f"MAX_FILE_SIZE ({max_file_size}) needs more than S3's 10000 parts of S3_PART_SIZE "
                         f"({part_size}): raise S3_PART_SIZE to at least {-(-max_file_size // 10000)}.")
    if not 0 <= file_ttl <= file_max_ttl:
        # A default longer than uploads may ask for would be a lifetime no upload can have.
        raise SystemExit(f"FILE_TTL ({file_ttl}) must be from 0 (files never expire) to FILE_MAX_TTL "
                         f"({file_max_ttl}): lower FILE_TTL or raise FILE_MAX_TTL.")
    return {
        "GATEWAY_HOST": env.get("GATEWAY_HOST", "127.0.0.1"),
        "GATEWAY_PORT": number("GATEWAY_PORT", 5000),
        # gunicorn worker processes: each its own GIL, so every core does Python work.
        "GATEWAY_WORKERS": workers,
        "GATEWAY_THREADS": number("GATEWAY_THREADS", 16),
        # Connections the gateway holds at once (gunicorn's worker_connections); at the cap,
        # the one that has waited longest for its request (holding no thread) is closed.
        "GATEWAY_CONNECTIONS": connections,
        "VALIDATOR_ADDR": env.get("VALIDATOR_ADDR", "127.0.0.1:50051"),
        "THUMBNAIL_ADDR": env.get("THUMBNAIL_ADDR", "127.0.0.1:50052"),
        # TLS to both services (GRPC_TLS_CA, and GRPC_TLS_CERT/_KEY for mutual TLS); None: plaintext.
        "GRPC_TLS": ClientTls.from_env(env, who="the gateway"),
        "DATA_DIR": data_dir,
        # Empty: a SQLite file in DATA_DIR.
        "DATABASE_URL": env.get("DATABASE_URL", ""),
        # Where uploaded files and thumbnails live: local (under DATA_DIR) or s3 (S3_BUCKET).
        "STORAGE": storage,
        # S3-compatible endpoint (MinIO, Ceph, moto...); empty: AWS's own for AWS_REGION.
        "S3_ENDPOINT_URL": env.get("S3_ENDPOINT_URL", "").strip(),
        "S3_BUCKET": bucket,
        # Prepended to every key (several services sharing one bucket): "" or e.g. "uploads/".
        "S3_PREFIX": env.get("S3_PREFIX", "").strip().lstrip("/"),
        # boto3's own names; unset credentials: boto3's usual chain (profiles, instance roles...).
        "AWS_REGION": (env.get("AWS_REGION", "") or env.get("AWS_DEFAULT_REGION", "")).strip() or "us-east-1",
        "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "").strip(),
        "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "").strip(),
        # Empty: path-style with S3_ENDPOINT_URL (what MinIO and most servers expect), else boto3's auto.
        "S3_ADDRESSING_STYLE": addressing,
        # Bytes per multipart part (and the part buffer each upload holds): 5 MiB to 5 GiB.
        "S3_PART_SIZE": part_size,
        # Downloads answer 302 to a presigned URL of the bucket instead of passing the bytes through.
        "S3_PRESIGNED_DOWNLOADS": flag("S3_PRESIGNED_DOWNLOADS", False),
        # Seconds a presigned download URL works.
        "S3_PRESIGNED_TTL": presigned_ttl,
        # The endpoint as browsers reach it, for presigned URLs; empty: S3_ENDPOINT_URL.
        "S3_PUBLIC_ENDPOINT_URL": env.get("S3_PUBLIC_ENDPOINT_URL", "").strip(),
        "MAX_FILE_SIZE": max_file_size,
        # fsync each uploaded file before it is renamed into place and answered:
        # survives a power cut, costs the disk's write speed on every upload.
        "UPLOAD_FSYNC": flag("UPLOAD_FSYNC", False),
        # The whole request body; room for the multipart framing of one full-size file.
        "MAX_REQUEST_SIZE": number("MAX_REQUEST_SIZE", max_file_size + 1024 * 1024),
        # Seconds the validator may take to answer once the last byte has arrived.
        "VALIDATOR_TIMEOUT": number("VALIDATOR_TIMEOUT", 10.0, float),
        # Seconds the thumbnail service may take before the upload goes on without one.
        "THUMBNAIL_TIMEOUT": number("THUMBNAIL_TIMEOUT", 5.0, float),
        # Seconds between attempts to fill in thumbnails that could not be made at upload time.
        "THUMBNAIL_RETRY_INTERVAL": number("THUMBNAIL_RETRY_INTERVAL", 15.0, float),
        # What image metadata is removed before an upload is stored (the thumbnail service's
        # Transform): keep, strip-location (EXIF GPS, XMP naming a place) or strip-all.
        "IMAGE_METADATA": image_metadata,
        # Seconds the thumbnail service's list of renderable types is kept before it is read again.
        "THUMBNAIL_RENDERERS_TTL": number("THUMBNAIL_RENDERERS_TTL", 30.0, float),
        # Longest time one upload may stream, start to end.
        "UPLOAD_TIMEOUT": number("UPLOAD_TIMEOUT", 3600.0, float),
        # Seconds a health probe of a gRPC service may take before it counts as down.
        "HEALTH_TIMEOUT": number("HEALTH_TIMEOUT", 1.0, float),
        # Seconds a stored file lives when its upload gives no expires_in; 0: for ever.
        "FILE_TTL": file_ttl,
        # The longest expires_in an upload may ask for (POST /upload and tus).
        "FILE_MAX_TTL": file_max_ttl,
        # Seconds between passes of the reaper of expired files (0: no reaper).
        "FILE_REAP_INTERVAL": number("FILE_REAP_INTERVAL", 60.0, float),
        # Seconds after which a temp file, or bytes without a record, count as left behind by a crash.
        "ORPHAN_AGE": number("ORPHAN_AGE", 3600.0, float),
        # Reconcile disk and records at start-up, and every this many seconds (0: only at start-up).
        "RECONCILE_ON_START": flag("RECONCILE_ON_START", True),
        "RECONCILE_INTERVAL": number("RECONCILE_INTERVAL", 3600.0, float),
        # Seconds an unfinished tus upload is kept after its last PATCH (and an
        # ended one is remembered, answering 410, before it is forgotten).
        "TUS_EXPIRY": number("TUS_EXPIRY", 86400.0, float),
        # Seconds between passes of the reaper of expired tus uploads.
        "TUS_REAP_INTERVAL": number("TUS_REAP_INTERVAL", 300.0, float),
        # Seconds a PATCH waits for another request writing the same upload, then 423.
        "TUS_LOCK_WAIT": number("TUS_LOCK_WAIT", 3.0, float),
        # STORAGE=s3: seconds a tus upload's lock (a row in the database, renewed while held)
        # outlives a gateway that died holding it.
        "TUS_LOCK_EXPIRY": lock_expiry,
        # Comma-separated origins whose pages may call the API and tus; none by default.
        "CORS_ORIGINS": env.get("CORS_ORIGINS", ""),
        # Seconds the validator's policy is cached by the gateway.
        "POLICY_TTL": number("POLICY_TTL", 30.0, float),
        # off: anyone who can reach the gateway may upload (loopback binds only); token: accounts.
        "AUTH": auth,
        # A bearer token that acts as the built-in admin (automation, first start); empty: none.
        "ADMIN_TOKEN": env.get("ADMIN_TOKEN", "").strip(),
        # Signs session cookies and share links; empty: a random key made once and kept in the database.
        "SECRET_KEY": env.get("SECRET_KEY", ""),
        # Seconds a browser sign-in lasts.
        "SESSION_LIFETIME": number("SESSION_LIFETIME", 7 * 86400),
        # How many proxies in front set X-Forwarded-For/-Proto/-Host (0: trust none).
        "TRUST_PROXY": number("TRUST_PROXY", 0),
        # The gateway's address as people reach it (https://files.example.org); share links use it.
        # Empty: the address of the request that made the link.
        "PUBLIC_URL": env.get("PUBLIC_URL", "").strip(),
        # Share links: lifetime when the request gives none, and the longest allowed (seconds).
        "SHARE_TTL": number("SHARE_TTL", 86400),
        "SHARE_MAX_TTL": number("SHARE_MAX_TTL", 30 * 86400),
        # Most live (unexpired, unrevoked) share links one file may have; 0: no limit.
        "MAX_SHARES_PER_FILE": caps["MAX_SHARES_PER_FILE"],
        # Links made before they were recorded (migration 0003) cannot be revoked one
        # by one: off refuses them all (410) instead of letting them run to their expiry.
        "SHARE_LEGACY_LINKS": flag("SHARE_LEGACY_LINKS", True),
        # Most API tokens one user may hold; 0: no limit (`flask tokens create` is not limited).
        "MAX_TOKENS_PER_USER": caps["MAX_TOKENS_PER_USER"],
        # Most bytes / files each user may keep stored; 0: no limit (per-user overrides: `flask users quota`).
        "USER_QUOTA_BYTES": number("USER_QUOTA_BYTES", 0),
        "USER_QUOTA_FILES": number("USER_QUOTA_FILES", 0),
        # Flask-Limiter rate limits with AUTH=token ("N/minute", "N/hour"; empty: none).
        "RATE_LIMIT_UPLOADS": env.get("RATE_LIMIT_UPLOADS", "120/minute").strip(),
        "RATE_LIMIT_UPLOADS_PER_IP": env.get("RATE_LIMIT_UPLOADS_PER_IP", "300/minute").strip(),
        "RATE_LIMIT_LOGIN": env.get("RATE_LIMIT_LOGIN", "30/minute").strip(),
        # New API tokens and new share links, per user.
        "RATE_LIMIT_TOKENS": env.get("RATE_LIMIT_TOKENS", "10/minute").strip(),
        "RATE_LIMIT_SHARES": env.get("RATE_LIMIT_SHARES", "60/minute").strip(),
        # Empty: chosen by gateway/http/limits.py from GATEWAY_WORKERS and DATA_DIR.
        "RATE_LIMIT_STORAGE": env.get("RATE_LIMIT_STORAGE", "").strip(),
        # Serve AUTH=off on a non-loopback address anyway (an authenticating proxy is in front).
        "ALLOW_PUBLIC_WITHOUT_AUTH": flag("ALLOW_PUBLIC_WITHOUT_AUTH", False),
        # Bytes left free on the data disk for the database, thumbnails and deletions:
        # an upload that would eat into them gets 507 (0: uploads may fill the disk).
        "DISK_RESERVE": number("DISK_RESERVE", 32 * 1024 * 1024),
        # Plugin modules to load (comma-separated), as the services do.
        "UPLOAD_PLUGINS": env.get("UPLOAD_PLUGINS", ""),
        "UPLOAD_PLUGINS_DISABLED": env.get("UPLOAD_PLUGINS_DISABLED", ""),
        "REFUSALS_KEEP_DAYS": refusals_keep,
        # UPLOAD_PLUGIN_<NAME>__<KEY>: the plugins' own settings (protos/plugin_settings.py).
        "PLUGIN_SETTINGS": {key: value for key, value in env.items() if key.startswith("UPLOAD_PLUGIN_")},
        # Where every event about files (stored, deleted, expired) is POSTed, signed with
        # WEBHOOK_SECRET; each within WEBHOOK_TIMEOUT seconds per step (connect, send, answer).
        "WEBHOOK_URLS": webhooks,
        "WEBHOOK_SECRET": webhook_secret,
        "WEBHOOK_TIMEOUT": webhook_timeout,
        # A plugin (a webhook) that failed an event gets it again after a pause doubling from 1 s
        # up to this many seconds; after EVENT_GIVE_UP_AFTER seconds (0: never) it is given up.
        "EVENT_RETRY_MAX_DELAY": retry_max_delay,
        "EVENT_GIVE_UP_AFTER": give_up_after,
        # Seconds a client has for the request line and headers, from their first byte
        # (and a new connection to send that byte); then 408 and the connection is closed.
        "CLIENT_HEADER_TIMEOUT": number("CLIENT_HEADER_TIMEOUT", 30.0, float),
        # Seconds a request body may pause (or a client leave a response unread)
        # before the gateway gives up on it: 408, nothing stored (tus keeps what arrived).
        "CLIENT_IDLE_TIMEOUT": number("CLIENT_IDLE_TIMEOUT", 60.0, float),
        # Bytes per second a request body must average over each CLIENT_IDLE_TIMEOUT
        # stretch (0: no minimum); a slower one is given up like a stalled one.
        "CLIENT_MIN_RATE": number("CLIENT_MIN_RATE", 500.0, float),
        # Longest request line (method, URL, version), header count and header line (gunicorn's limits).
        "MAX_REQUEST_LINE": number("MAX_REQUEST_LINE", 4094),
        "MAX_HEADER_COUNT": number("MAX_HEADER_COUNT", 100),
        "MAX_HEADER_SIZE": number("MAX_HEADER_SIZE", 8190),
        # The request line and headers together, bytes: what one connection waiting for
        # its request may hold in memory (x GATEWAY_CONNECTIONS, in the worst case).
        "MAX_HEADER_BLOCK": number("MAX_HEADER_BLOCK", 64 * 1024),
    }


def webhook_urls(raw: str) -> list[str]:
    """WEBHOOK_URLS: comma-separated http(s) URLs, each once."""
    from urllib.parse import urlsplit

    urls = []
    for url in (part.strip() for part in raw.split(",")):
        if not url:
            continue
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:
            raise SystemExit(f"WEBHOOK_URLS: {url!r} is not an http:// or https:// URL with a host.")
        if url not in urls:
            urls.append(url)
    return urls


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback."""
    import ipaddress
    import socket

    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_exposure(settings: dict) -> None:
    """Refuse to serve an open (AUTH=off) gateway beyond this machine."""
    host = settings["GATEWAY_HOST"]
    if settings["AUTH"] == "off" and not settings["ALLOW_PUBLIC_WITHOUT_AUTH"] and not is_loopback(host):
        raise SystemExit(
            f"Refusing to start: GATEWAY_HOST={host} can be reached from other machines, and with "
            "AUTH=off anyone there could upload, list and delete files. Set AUTH=token (see the "
            "README, 'Accounts'), bind 127.0.0.1, or set ALLOW_PUBLIC_WITHOUT_AUTH=1 if a proxy in "
            "front of the gateway already authenticates every request.")
