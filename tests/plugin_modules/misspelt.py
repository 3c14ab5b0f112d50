"""A plugin with a typo in its hook name: loading it must fail loudly."""
from protos.plugins import hookimpl


@hookimpl
def upload_chek(file):
    return None
