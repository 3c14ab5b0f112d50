"""Transforms before commit (IMAGE_METADATA): an accepted upload of a type the
thumbnail service transforms is sent through its Transform call, and when that
changes it, the new bytes are written to a temp of their own beside the final
place and committed instead of the upload's. The record's size and sha256 (and
so the download's ETag) are the stored bytes'; the audit keeps the upload's own
size and sha256 and what was removed. The new bytes are judged by the validator
as they are written (every byte of them when a rule reads every byte), since a
transform could make of harmless bytes a file a rule refuses.

Fail closed: with IMAGE_METADATA other than ``keep`` an image that may carry metadata
is never stored as uploaded when it could not be sent through: the thumbnail service
unreachable or busy is 503 (nothing stored, try again), a file whose metadata cannot
be removed safely (a damaged container) is refused (422), as is one the processing
failed on (a transform that broke on it, ``transform_failed``). An image whose container
holds no metadata at all (most do not) is stored as uploaded, service or not.

Called from one place in each way in (``Upload.finish``, ``Ingest.adopt`` and
``Ingest.adopt_stored`` in gateway.ingest.pipeline).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.json_format import MessageToDict

from gateway.ingest.metadata_probe import carries_metadata
from gateway.ingest.services import Services
from gateway.ingest.verdicts import refusal
from protos.errors import Internal, InvalidInput, Refused, TimedOut, TooLarge, Unavailable, UnsupportedType, \
    UploadError

log = logging.getLogger("upload.gateway")

# The transform the thumbnail service ships: all it does is remove metadata, so an image
# without any needs no call (gateway.ingest.metadata_probe).
SHIPPED = frozenset({"image_metadata"})

UNREACHABLE = ("The processing service cannot be reached, so the image's metadata (its location) could not "
               "be removed; nothing was stored. Please try again shortly.")
UNREACHABLE_PLUGIN = ("The processing service cannot be reached, so this file could not be processed before it "
                      "was stored; nothing was stored. Please try again shortly.")


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
        self.validator_timeout = config.get("VALIDATOR_TIMEOUT", 10.0)
        self.thumbnail_timeout = config.get("THUMBNAIL_TIMEOUT", 10.0)

    def covers(self, mime_type: str) -> bool | None:
        """Whether some transform would run on ``mime_type``; None when the thumbnail service
        has never listed them (it has not answered since this gateway started). With
        IMAGE_METADATA=keep the shipped one would change nothing: only the others count."""
        if not mime_type:
            return False
        try:
            if mime_type not in self.services.transformable(mime_type):
                return False
        except UploadError as exc:
            if self.mode == "keep":
                return False  # nothing of ours to do; a plugin's transform cannot be told from here
            log.warning("no list of transforms from the thumbnail service: %s", exc.message)
            return None
        return self.mode != "keep" or self.acts_for_a_plugin(mime_type)

    def wanted(self, mime_type: str, is_image: bool, open_chunks: Callable[[], Iterator[bytes]]) -> bool:
        """Whether a file of ``mime_type`` goes through the transforms. An image without any
        metadata does not when the shipped transform is the only one for its type (it would
        be stored byte for byte anyway). With no list of transforms from the thumbnail service
        an image that may carry metadata is taken to need them: Unavailable (fail closed);
        anything else is stored as it is."""
        covered = self.covers(mime_type)
        if covered is None:
            if is_image and carries_metadata(open_chunks(), mime_type):
                raise Unavailable(UNREACHABLE)
            return False
        if not covered:
            return False
        if self.mode == "keep" or self.acts_for_a_plugin(mime_type):
            return True  # a plugin's transform: it has its own reasons to see the file
        return carries_metadata(open_chunks(), mime_type)

    def acts_for_a_plugin(self, mime_type: str) -> bool:
        """Whether a transform other than the shipped one handles ``mime_type``."""
        return bool(self._names(mime_type) - SHIPPED)

    def _names(self, mime_type: str) -> frozenset[str]:
        return self.services.transform_names(mime_type) or frozenset()

    def apply(self, open_chunks: Callable[[], Iterator[bytes]], filename: str, original_name: str,
              mime_type: str, size: int, uploaded_sha256: str) -> Transformed | None:
        """Send the file through; None when it is to be stored byte for byte, else the
        new bytes in a temp beside ``filename``'s place (the caller commits or discards it),
        judged by the validator as they were written. Raises Refused (cannot be done
        safely, or the new bytes refused) or Unavailable/TimedOut (try again)."""
        # Read before the call: a validator that cannot be reached is its own failure, not one
        # to be told as the thumbnail service's below.
        policy = self.services.policy()
        try:
            result, chunks = self.services.transform(open_chunks, original_name, mime_type, size,
                                                     {"image_metadata": self.mode})
            if not result.changed:
                return None
            temp = self.storage.create_temp("files", filename)
            # The validator judged the upload's bytes, and these are others: a transform (a
            # plugin's, or the stripper cutting a segment out) could make of harmless bytes a
            # file a rule refuses. They go to a Validate stream as they are written, every
            # byte of them when a rule reads every byte: no second read.
            check = None
            try:
                check = self._start_check(policy, original_name, mime_type, result.size)
                digest, written = hashlib.sha256(), 0
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    self.write_temp(temp, chunk)
                    check.feed(chunk)
                if written != result.size:
                    raise Unavailable("The processing service's answer was cut short; nothing was stored. "
                                      "Please try again shortly.")
            except BaseException:
                if check is not None:
                    check.cancel()
                self.storage.discard(temp)
                raise
        except InvalidInput as exc:
            raise Refused("image_metadata_unreadable",
                          f"The image's metadata could not be removed safely ({exc.message}); nothing was stored.",
                          original_name) from None
        except Internal as exc:
            # The service failed on this file (a transform that broke on it, or its process
            # killed): never stored as uploaded, and nothing the user could retry into success.
            log.error("transform of %s failed in the thumbnail service: %s", filename, exc.message)
            raise Refused("transform_failed",
                          "This file could not be processed before it was stored (processing failed on it); "
                          "nothing was stored.", original_name) from None
        except TooLarge as exc:
            raise Refused("image_metadata_too_large",
                          f"The image is too large for its metadata to be removed ({exc.message}); "
                          "nothing was stored.", original_name) from None
        except UnsupportedType:
            self.services.forget_transforms()  # restarted without it: the list is read again
            raise Unavailable(UNREACHABLE) from None
        except (Unavailable, TimedOut) as exc:
            log.warning("transform of %s failed: %s", filename, exc.message)
            if self.acts_for_a_plugin(mime_type):
                raise Unavailable(UNREACHABLE_PLUGIN) from None  # a plugin's transform is never skipped
            if not carries_metadata(open_chunks(), mime_type):
                return None  # nothing that must go: stored as uploaded, as without the service
            raise Unavailable(UNREACHABLE) from None
        try:
            verdict = check.finish(written, self.validator_timeout)
            if not verdict.accepted:
                log.info("%s refused after its transform by %s", filename, ", ".join(result.transforms))
                raise refusal(verdict, original_name)
        except BaseException:
            self.storage.discard(temp)
            raise
        finally:
            check.cancel()
        log.info("stored %s transformed by %s: removed %s", filename, ", ".join(result.transforms),
                 ", ".join(result.removed) or "nothing")
        return Transformed(temp, written, digest.hexdigest(), {
            "names": list(result.transforms),
            "removed": list(result.removed),
            "mode": self.mode,
            "uploaded_size": size,
            "uploaded_sha256": uploaded_sha256,
            "checked": {"bytes_read": verdict.bytes_read,
                        "decisions": [MessageToDict(d, preserving_proto_field_name=True) for d in verdict.decisions]},
        })

    def _start_check(self, policy, original_name: str, mime_type: str, size: int):
        # The stream lives while the new bytes arrive from the thumbnail service (its deadline,
        # Services.transform's) and then while the validator judges them (validate_stored's).
        timeout = (self.thumbnail_timeout + 30.0 + size / (20 * 1024 * 1024)
                   + self.validator_timeout + size / (8 * 1024 * 1024))
        return self.services.start_validation(original_name, mime_type, policy.head_bytes, declared_size=size,
                                              whole=policy.whole_file, timeout=timeout)
