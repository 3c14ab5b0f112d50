"""The images' HEALTHCHECK: exit 0 when the service in this container is healthy, 1 otherwise.

    python healthcheck.py grpc 127.0.0.1:50051       # grpc.health.v1 Check of the whole server ("")
    python healthcheck.py http http://127.0.0.1:5000/healthz

The slim images have neither curl nor grpc_health_probe, and adding a binary for this
would be one more thing to patch; the service's own venv already has grpcio and
grpcio-health-checking, so the check runs on what the service itself runs on.

A service serving TLS is checked over TLS with the container's own GRPC_TLS_* settings
(protos/tls.py, next to this file in the images): GRPC_TLS_CA, and GRPC_TLS_CERT/_KEY,
which the service presents too, so its certificate must allow client use as well. The
check dials 127.0.0.1, so set GRPC_TLS_SERVER_NAME to a name the certificate carries.
"""
from __future__ import annotations

import sys
import urllib.request

TIMEOUT = 3.0


def grpc_healthy(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos.tls import ClientTls, open_channel

    with open_channel(address, ClientTls.from_env(who="the health check")) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return False
    # A draining server (SIGTERM) answers NOT_SERVING: that is not healthy either.
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr)
        return False
    return True


def http_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status == 200
    except OSError as error:  # URLError and HTTPError (a non-2xx answer) are OSErrors
        print(f"{url}: {error}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("grpc", "http"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, target = argv
    return 0 if (grpc_healthy(target) if kind == "grpc" else http_healthy(target)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
