"""Gateway settings: every one an environment variable (see the README table)."""
from __future__ import annotations

import os
from collections.abc import Mapping


def from_env(env: Mapping[str, str] | None = None) -> dict:
    env = os.environ if env is None else env
    return {
        "GATEWAY_HOST": env.get("GATEWAY_HOST", "127.0.0.1"),
        "GATEWAY_PORT": int(env.get("GATEWAY_PORT", "5000")),
        "GATEWAY_THREADS": int(env.get("GATEWAY_THREADS", "16")),
        "VALIDATOR_ADDR": env.get("VALIDATOR_ADDR", "127.0.0.1:50051"),
        "THUMBNAIL_ADDR": env.get("THUMBNAIL_ADDR", "127.0.0.1:50052"),
        # Seconds a health probe of a gRPC service may take before it counts as down.
        "HEALTH_TIMEOUT": float(env.get("HEALTH_TIMEOUT", "1.0")),
    }
