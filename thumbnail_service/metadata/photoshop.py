"""A Photoshop IRB under strip-location: what in it says where goes, the rest stays.

The IPTC resource loses its location datasets (and the resource goes when nothing is left in
it), XMP naming a place goes, Photoshop's copies of the EXIF lose their GPS as the EXIF does;
every other resource (resolution, ICC profile, captions, thumbnail...) is kept as it was."""
from __future__ import annotations

from thumbnail_service.metadata.common import xmp_goes
from thumbnail_service.metadata.exif import exif_segment
from thumbnail_service.metadata.iptc import EXIF_RESOURCES, IPTC_RESOURCE, XMP_RESOURCE, build, fix_digest, \
    resources, strip_iim


def strip_irb(irb: bytes) -> tuple[bytes | None, list[str]]:
    """The IRB without location (b"" when no resource is left); (None, []) when it had none.
    Raises Damaged when it cannot be read: the caller drops it whole."""
    found, tail = resources(irb)
    removed, iptc = [], None
    for resource in found:
        rid, _, data = resource
        if rid == IPTC_RESOURCE:
            new = strip_iim(data)
            if new is not None:
                resource[2], iptc = new or None, (data, new)
                removed.append("iptc.location")
        elif rid == XMP_RESOURCE and xmp_goes(data, "strip-location"):
            resource[2] = None
            removed.append("xmp")
        elif rid in EXIF_RESOURCES:
            new, what = exif_segment(data, "strip-location", resizable=True)
            if new is not None:
                resource[2] = new or None
                removed += what
    if not removed:
        return None, []
    if iptc is not None:
        fix_digest(found, *iptc)
    left = [r for r in found if r[2] is not None]  # None: emptied here (some are empty as written)
    return (build(left, tail) if left else b""), removed
