"""The content must agree with the extension (libmagic on the head)."""
from __future__ import annotations

from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection

EXECUTABLE_TYPES = frozenset({
    "application/x-dosexec",
    "application/x-msdownload",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-pie-executable",
    "application/x-sharedlib",
    "application/x-elf",
    "application/x-mach-binary",
    "application/x-java-applet",
    "application/java-archive",  # a JAR as the jar tool writes it: runnable with `java -jar`
})


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    file_type = policy.type_for(file.extension)
    if file_type is None:  # the allowlist rule has refused it already
        return None
    detected = file.detected_type
    if detected in EXECUTABLE_TYPES:
        return Rejection(
            "executable_content",
            f"The file is named .{file.extension} but is a program ({detected}); programs are not accepted.",
        )
    if detected not in file_type.mime_types:
        return Rejection(
            "content_mismatch",
            f"The file is named .{file.extension} but its content is {detected}, "
            f"not {file_type.mime_types[0]}.",
        )
    return None
