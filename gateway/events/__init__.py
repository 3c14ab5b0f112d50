"""Events about files, delivered to plugins: the gateway's plugin manager, one
thread per plugin that takes events (dispatch.py), and the shipped webhooks
(webhooks.py). The events themselves are written by the files' repository into
the outbox (gateway/metadata/outbox.py), in the transaction of each change; the
hooks are in gateway/hookspecs.py.

May use http (the record an event carries) and everything below it; only
create_app, __main__ and cli use it.
"""
