"""The thumbnail service: a gRPC service (upload.v1.Thumbnail) that renders small
previews of uploads. Renderers are pluggy plugins, the built-in Pillow one
(renderers.py) included; each render runs in a process of its own under a CPU
and memory budget (isolation.py). Imports only ``protos``."""
