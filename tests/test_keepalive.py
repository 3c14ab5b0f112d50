"""The services' keepalive policy: a caller may ping every 10 s or more, with or
without a call open, as common Go and Java client settings do, and its calls go
on. (gRPC's default server policy answers pings more often than every 5 minutes
with GOAWAY too_many_pings, which breaks the calls open on that connection.)"""
from __future__ import annotations

import time

import grpc

from protos.upload.v1 import validator_pb2, validator_pb2_grpc

# What a Go client with `keepalive.ClientParameters{Time: 10 * time.Second, PermitWithoutStream: true}`
# sends.
CLIENT_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def test_an_idle_connection_pinged_every_10_s_stays_open(start_validator):
    running = start_validator()
    states = []
    with grpc.insecure_channel(running.address, options=CLIENT_KEEPALIVE) as channel:
        stub = validator_pb2_grpc.ValidatorStub(channel)
        stub.GetPolicy(validator_pb2.GetPolicyRequest(), timeout=5)
        channel.subscribe(states.append, try_to_connect=False)
        time.sleep(35)  # no call open: only pings cross the connection
        channel.unsubscribe(states.append)
    # Told GOAWAY (too_many_pings), the channel would have gone idle to reconnect.
    assert states and set(states) == {grpc.ChannelConnectivity.READY}, states
