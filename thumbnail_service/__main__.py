"""``python -m thumbnail_service``: serve, configured from the environment.

With THUMBNAIL_PROCESSES above 1 the metrics mode is chosen here, before anything
imports prometheus_client (protos/processes.py).
"""
import atexit
import os

from protos.processes import prepare_metrics, remove_metrics_dir
from thumbnail_service.config import Settings

atexit.register(remove_metrics_dir, prepare_metrics(Settings.from_env().processes), os.getpid())

from thumbnail_service.server import serve  # noqa: E402 - after the metrics mode is chosen

serve()
