"""Package ``upload.v1``: the .proto files and their generated modules
(``validator_pb2``, ``thumbnail_pb2``, ``common_pb2`` and their ``_grpc`` stubs)."""
