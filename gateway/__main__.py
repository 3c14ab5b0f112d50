"""Serve the gateway with gunicorn (threaded workers), configured from the environment."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

from gateway import config, create_app


class GatewayServer(BaseApplication):
    def __init__(self, settings: dict):
        self.settings = settings
        super().__init__()

    def load_config(self):
        s = self.settings
        self.cfg.set("bind", f"{s['GATEWAY_HOST']}:{s['GATEWAY_PORT']}")
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("workers", 1)
        self.cfg.set("threads", s["GATEWAY_THREADS"])
        self.cfg.set("accesslog", "-")

    def load(self):
        return create_app()


if __name__ == "__main__":
    settings = config.from_env()
    config.check_exposure(settings)
    GatewayServer(settings).run()
