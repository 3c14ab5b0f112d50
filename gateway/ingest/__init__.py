"""The one upload pipeline: reading the body (request streams, multipart),
hashing it as it arrives, safe names, the gRPC clients of the validator and the
thumbnail service, and the thumbnails made (or retried) after an upload.

Start reading at ``pipeline.py``. May use storage and metadata; knows nothing of
routes, tus or who is asking.
"""
