"""The HTTP surface for people and scripts: one blueprint per area (uploads,
files, downloads, sharing, accounts, sign-in, the page, the dashboard, health),
plus what they share (HTML answers, JSON bodies, records, CORS, rate limits).

May use every layer below it (tus, ingest, auth, storage, metadata); nothing
below may import it. A new route lands here, or in ``tus`` for /tus/.
"""
