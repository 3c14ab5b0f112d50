"""Long-lived gRPC channels to the validator and thumbnail services."""
from __future__ import annotations

import grpc
from flask import Flask, current_app
from grpc_health.v1 import health_pb2, health_pb2_grpc

# round_robin: a DNS name that resolves to several replicas spreads the calls.
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]


class Services:
    def __init__(self, validator_addr: str, thumbnail_addr: str):
        self.channels = {
            "validator": grpc.insecure_channel(validator_addr, options=CHANNEL_OPTIONS),
            "thumbnail": grpc.insecure_channel(thumbnail_addr, options=CHANNEL_OPTIONS),
        }

    def health(self, timeout: float) -> dict[str, str]:
        """Each service's grpc.health.v1 status name, or UNREACHABLE."""
        status = {}
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
                status[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError:
                status[name] = "UNREACHABLE"
        return status

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def init_app(app: Flask) -> None:
    app.extensions["services"] = Services(app.config["VALIDATOR_ADDR"], app.config["THUMBNAIL_ADDR"])


def services() -> Services:
    return current_app.extensions["services"]
