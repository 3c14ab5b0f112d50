"""The thumbnail service: a gRPC service (upload.v1.Thumbnail) that renders small
previews of uploads. Renderers are pluggy plugins, the built-in Pillow one
(renderers.py) included. Imports only ``protos``."""
