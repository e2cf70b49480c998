"""The six land-cover classes and their mask colours, in the original's class order.

The colours are the six that actually occur in the masks (the dataset's README); its
classes.json lists others that occur in no mask, so it is not read. Every module names
classes through this one; it imports nothing.
"""

from __future__ import annotations

from collections import OrderedDict

PALETTE: OrderedDict[str, tuple[int, int, int]] = OrderedDict(
    [
        ("Building", (0x3C, 0x10, 0x98)),
        ("Land", (0x84, 0x29, 0xF6)),
        ("Road", (0x6E, 0xC1, 0xE4)),
        ("Vegetation", (0xFE, 0xDD, 0x3A)),
        ("Water", (0xE2, 0xA9, 0x29)),
        ("Unlabeled", (0x9B, 0x9B, 0x9B)),
    ]
)
CLASS_NAMES: tuple[str, ...] = tuple(PALETTE)
NUM_CLASSES = len(PALETTE)
UNLABELED = CLASS_NAMES.index("Unlabeled")


def hex_colour(rgb) -> str:
    """``(r, g, b)`` as ``#RRGGBB``."""
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02X}{g:02X}{b:02X}"
