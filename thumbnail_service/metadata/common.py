"""What the strippers of every container share: the error for a structure that cannot be
read safely, and the test for XMP that names a location."""
from __future__ import annotations

import re


class Damaged(Exception):
    """A structure that cannot be read safely."""


# XMP that says where: dropped whole under strip-location. Any case: DJI's drones write
# drone-dji:GpsLatitude, which a case-sensitive match let through.
XMP_LOCATION = re.compile(rb"exif(?:EX)?:GPS|GPSLatitude|GPSLongitude|photoshop:City|photoshop:State|"
                          rb"photoshop:Country|Iptc4xmpCore:Location|Iptc4xmpExt:Location|LocationCreated|"
                          rb"LocationShown", re.IGNORECASE)
EMPTY_XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
             b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/><?xpacket end="w"?>')


def xmp_goes(xmp: bytes, mode: str) -> bool:
    return mode == "strip-all" or XMP_LOCATION.search(xmp) is not None


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
