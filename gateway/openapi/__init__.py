"""The OpenAPI 3.1 description of the HTTP API, served at GET /openapi.json.

It reads its limits (page size, stored-name pattern, open endpoints) from the
routes themselves, so it sits above ``http``; nothing imports it but create_app.
"""
