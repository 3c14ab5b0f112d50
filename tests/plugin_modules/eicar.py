"""A plugin loaded by name through UPLOAD_PLUGINS in the tests."""
from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@hookimpl
def upload_check(file):
    if EICAR in file.head(4096):
        return Rejection("malware", "This file contains the EICAR test virus signature.")
    return None
