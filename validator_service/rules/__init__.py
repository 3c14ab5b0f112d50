"""The built-in rules. Each is a plugin like any other, registered first.

Listed in the order their checks run: cheap refusals before byte-hungry ones.
The ClamAV rule (``clamav.py``, a whole-file rule) is not listed: it is a plugin
object that ``validator_service.server.create_plugins`` registers when
CLAMD_ADDRESS is set.
"""

DEFAULT_PLUGINS = (
    "validator_service.rules.filetypes",
    "validator_service.rules.size",
    "validator_service.rules.content",
    "validator_service.rules.ooxml",
    "validator_service.rules.image",
)
