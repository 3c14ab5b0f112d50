"""``python -m validator_service``: serve, configured from the environment.

With VALIDATOR_PROCESSES above 1 the metrics mode is chosen here, before anything
imports prometheus_client (protos/processes.py).
"""
import atexit
import os

from protos.processes import prepare_metrics, remove_metrics_dir
from validator_service.config import Settings

atexit.register(remove_metrics_dir, prepare_metrics(Settings.from_env().processes), os.getpid())

from validator_service.server import serve  # noqa: E402 - after the metrics mode is chosen

serve()
