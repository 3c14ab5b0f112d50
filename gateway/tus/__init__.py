"""Resumable uploads, tus 1.0.0 at /tus/: the wire protocol, the routes, the write
path under each upload's lock, concatenation (a final upload taking its partial
uploads), and the stores of uploads in progress (local disk, or S3 multipart
uploads with the lock in the database).

A finished upload goes through ``ingest`` like any POST /upload. May use ingest,
auth, storage and metadata; only ``http`` and create_app sit above it.
"""
