"""The seed's allowed types, and the rule that only they are accepted."""
from __future__ import annotations

from protos.plugins import hookimpl
from validator_service.hookspecs import FileType, Rejection

# Every MIME type below was seen from libmagic on a genuine file of that kind
# (tests/validator_service/test_types.py checks each against a real sample); where
# libmagic versions disagree, all their answers are listed.
DEFAULT_TYPES = (
    FileType("jpg", ("image/jpeg",), image=True),
    FileType("jpeg", ("image/jpeg",), image=True),
    FileType("png", ("image/png",), image=True),
    FileType("gif", ("image/gif",), image=True),
    FileType("webp", ("image/webp",), image=True),
    # HEIF images: libmagic names them by the ftyp box's major brand, and writers differ
    # (a phone's .heic says heic; a .heif may be HEVC-coded, heic, or say only mif1).
    FileType("heic", ("image/heic", "image/heif"), image=True),
    FileType("heif", ("image/heif", "image/heic"), image=True),
    FileType("avif", ("image/avif",), image=True),
    FileType("svg", ("image/svg+xml",)),
    FileType("pdf", ("application/pdf",)),
    # libmagic names a Word file only once it has parsed the compound file's
    # directory; from a head, or on older versions, it says OLE/CDF.
    FileType("doc", ("application/msword", "application/x-ole-storage", "application/CDFV2",
                     "application/vnd.ms-office")),
    # Older libmagic (< 5.38) calls every OOXML file a zip.
    FileType("docx", ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                      "application/zip")),
    # Prose with a steady comma count per line is taken for CSV.
    FileType("txt", ("text/plain", "text/csv")),
    # CSV detection needs three lines and (newer libmagic) three columns.
    FileType("csv", ("text/csv", "application/csv", "text/plain")),
    FileType("zip", ("application/zip",)),
    FileType("rar", ("application/x-rar", "application/vnd.rar")),  # 5.46+: vnd.rar
    FileType("7z", ("application/x-7z-compressed",)),
    FileType("tar", ("application/x-tar", "application/x-gtar", "application/x-ustar")),
    FileType("gz", ("application/gzip", "application/x-gzip")),
    # Videos. An MP4 whose brand is Apple's M4V (iTunes, some encoders) is video/x-m4v.
    FileType("mp4", ("video/mp4", "video/x-m4v")),
    FileType("webm", ("video/webm",)),
    FileType("mov", ("video/quicktime",)),
)


@hookimpl
def upload_file_types():
    return list(DEFAULT_TYPES)


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    if file.extension and policy.type_for(file.extension):
        return None
    allowed = ", ".join(sorted(policy.types))
    if not file.extension:
        return Rejection(
            "extension_not_allowed",
            f"The file name has no extension; allowed types are: {allowed}.",
        )
    return Rejection(
        "extension_not_allowed",
        f"Files of type .{file.extension} are not allowed; allowed types are: {allowed}.",
    )
