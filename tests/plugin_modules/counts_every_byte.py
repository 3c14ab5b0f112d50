"""A whole-file rule that refuses nothing and counts every byte it is fed, over every file
(``CountsEveryByte.seen``): with it loaded the policy says ``whole_file``, and a test can tell
how many bytes reached the validator's rules."""
from protos.plugins import hookimpl
from validator_service.hookspecs import WholeFileRule


class CountsEveryByte:
    seen = 0

    def __init__(self, file):
        pass

    def feed(self, data):
        type(self).seen += len(data)

    def finish(self):
        return None

    def close(self):
        pass


class CountingRule:
    """The plugin object (the module's hook would make every pm that loads it count)."""

    @hookimpl
    def upload_whole_file_rules(self):
        yield WholeFileRule("counts_every_byte", CountsEveryByte)
