"""Transforms before commit (IMAGE_METADATA): an accepted upload of a type the
thumbnail service transforms is sent through its Transform call, and when that
changes it, the new bytes are written to a temp of their own beside the final
place and committed instead of the upload's. The record's size and sha256 (and
so the download's ETag) are the stored bytes'; the audit keeps the upload's own
size and sha256 and what was removed.

Fail closed: with IMAGE_METADATA other than ``keep`` a file of such a type is
never stored as uploaded when it could not be sent through: the thumbnail service
unreachable or busy is 503 (nothing stored, try again), a file whose metadata
cannot be removed safely (a damaged container) is refused (422).

Called from one place in each way in (``Upload.finish``, ``Ingest.adopt`` and
``Ingest.adopt_stored`` in gateway.ingest.pipeline).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gateway.ingest.services import Services
from protos.errors import InvalidInput, Refused, TimedOut, TooLarge, Unavailable, UnsupportedType, UploadError

log = logging.getLogger("upload.gateway")

UNREACHABLE = ("The processing service cannot be reached, so the image's metadata (its location) could not "
               "be removed; nothing was stored. Please try again shortly.")


@dataclass
class Transformed:
    """The bytes to store instead of the upload's, in ``temp`` (not yet committed)."""
    temp: object
    size: int
    sha256: str
    audit: dict = field(default_factory=dict)


class Transformer:
    def __init__(self, services: Services, storage, write_temp: Callable, config: dict):
        self.services = services
        self.storage = storage
        self.write_temp = write_temp
        self.mode = config.get("IMAGE_METADATA", "strip-location")

    def wanted(self, mime_type: str, is_image: bool) -> bool:
        """Whether a file of ``mime_type`` goes through the transforms. With no list of
        them from the thumbnail service yet (it has not answered since this gateway
        started) an image is taken to need them: Unavailable (fail closed); anything
        else is stored as it is."""
        if self.mode == "keep" or not mime_type:
            return False
        try:
            return mime_type in self.services.transformable(mime_type)
        except UploadError as exc:
            log.warning("no list of transforms from the thumbnail service: %s", exc.message)
            if is_image:
                raise Unavailable(UNREACHABLE) from None
            return False

    def apply(self, open_chunks: Callable[[], Iterator[bytes]], filename: str, original_name: str,
              mime_type: str, size: int, uploaded_sha256: str) -> Transformed | None:
        """Send the file through; None when it is to be stored byte for byte, else the
        new bytes in a temp beside ``filename``'s place (the caller commits or discards it).
        Raises Refused (cannot be done safely) or Unavailable/TimedOut (try again)."""
        try:
            result, chunks = self.services.transform(open_chunks, original_name, mime_type, size,
                                                     {"image_metadata": self.mode})
            if not result.changed:
                return None
            temp = self.storage.create_temp("files", filename)
            try:
                digest, written = hashlib.sha256(), 0
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    self.write_temp(temp, chunk)
                if written != result.size:
                    raise Unavailable("The processing service's answer was cut short; nothing was stored. "
                                      "Please try again shortly.")
            except BaseException:
                self.storage.discard(temp)
                raise
        except InvalidInput as exc:
            raise Refused("image_metadata_unreadable",
                          f"The image's metadata could not be removed safely ({exc.message}); nothing was stored.",
                          original_name) from None
        except TooLarge as exc:
            raise Refused("image_metadata_too_large",
                          f"The image is too large for its metadata to be removed ({exc.message}); "
                          "nothing was stored.", original_name) from None
        except UnsupportedType:
            self.services.forget_transforms()  # restarted without it: the list is read again
            raise Unavailable(UNREACHABLE) from None
        except (Unavailable, TimedOut) as exc:
            log.warning("transform of %s failed: %s", filename, exc.message)
            raise Unavailable(UNREACHABLE) from None
        log.info("stored %s transformed by %s: removed %s", filename, ", ".join(result.transforms),
                 ", ".join(result.removed) or "nothing")
        return Transformed(temp, written, digest.hexdigest(), {
            "names": list(result.transforms),
            "removed": list(result.removed),
            "mode": self.mode,
            "uploaded_size": size,
            "uploaded_sha256": uploaded_sha256,
        })
