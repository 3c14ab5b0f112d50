"""A whole-file rule that reads every byte and finds nothing: what streaming whole files to the
validator costs, without a scanner's own work (loaded by bench/whole_file.py via UPLOAD_PLUGINS)."""
from protos.plugins import hookimpl
from validator_service.hookspecs import WholeFileRule


class CountBytes:
    def __init__(self, file):
        self.seen = 0

    def feed(self, data):
        self.seen += len(data)

    def finish(self):
        return None

    def close(self):
        pass


@hookimpl
def upload_whole_file_rules():
    yield WholeFileRule("count_bytes", CountBytes)
