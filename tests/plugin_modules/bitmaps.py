"""A plugin loaded by name through UPLOAD_PLUGINS in the tests: image types the
built-in rules do not know (BMP, TIFF), declared as images."""
from protos.plugins import hookimpl
from validator_service.hookspecs import FileType


@hookimpl
def upload_file_types():
    yield FileType("bmp", ("image/bmp", "image/x-ms-bmp"), image=True)
    yield FileType("tif", ("image/tiff",), image=True)
