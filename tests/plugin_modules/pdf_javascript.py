"""A plugin's own whole-file rule: PDFs that carry JavaScript (a `/JS` name anywhere
in the file, however far in) are refused. Loaded through UPLOAD_PLUGINS in the tests."""
from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection, WholeFileRule

NEEDLE = b"/JS"


class FindJavaScript:
    """Looks for NEEDLE in every piece, and across the seam between two pieces."""

    opened = 0
    closed = 0

    def __init__(self, file):
        self.tail, self.found, self.seen = b"", False, 0
        FindJavaScript.opened += 1

    def feed(self, data):
        keep = len(NEEDLE) - 1
        self.found = self.found or NEEDLE in self.tail + data[:keep] or NEEDLE in data
        self.tail = (self.tail + data[-keep:])[-keep:]
        self.seen += len(data)

    def finish(self):
        if self.found:
            return Rejection("pdf_javascript", f"This PDF carries JavaScript (found within its {self.seen} bytes); "
                                               "PDFs with scripts are not accepted.")
        return None

    def close(self):
        FindJavaScript.closed += 1


def open_scanner(file):
    return FindJavaScript(file) if file.extension == "pdf" else None


@hookimpl
def upload_whole_file_rules():
    yield WholeFileRule("pdf_javascript", open_scanner)
