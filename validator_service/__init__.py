"""The validator: a gRPC service (upload.v1.Validator) that judges an upload by its
extension, its content (libmagic), its size and its image dimensions. Rules are
pluggy plugins, the built-in ones (rules/) included. Imports only ``protos``."""
