"""Generate the Python modules of the upload.v1 protos next to their .proto files.

Run as ``python -m protos.generate`` (``make protos`` and the Dockerfiles do). The .proto
files are in buf's layout, protos/ being the module root, so they import each other as
"upload/v1/common.proto" and protoc writes ``from upload.v1 import common_pb2``. Here the
package is ``protos``: those imports are rewritten to ``protos.upload.v1`` (protoc's
Python plugin has no option for a package prefix; protoletariat does this as a tool, which
is one more dependency for a one-line rewrite)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCES = sorted((ROOT / "upload" / "v1").glob("*.proto"))
_IMPORT = re.compile(rb"^from upload\.v1 import ", re.MULTILINE)


def generate() -> list[Path]:
    from grpc_tools import protoc  # only needed here: a runtime install may leave grpcio-tools out

    args = ["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}", *map(str, SOURCES)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on the .proto files above")
    written = [p for s in SOURCES for p in (s.with_name(s.stem + "_pb2.py"), s.with_name(s.stem + "_pb2.pyi"),
                                          s.with_name(s.stem + "_pb2_grpc.py"))]
    for path in written:
        path.write_bytes(_IMPORT.sub(b"from protos.upload.v1 import ", path.read_bytes()))
    return written


if __name__ == "__main__":
    generate()
    sys.exit(0)
