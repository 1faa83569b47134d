"""Test-time frame sampling of Text4Vis (single view and ``clips`` temporal views)."""

from __future__ import annotations

from text4vis.models.errors import InputError
from text4vis.models.sampling import sample_indices as sample_indices  # re-exported: the method's arithmetic


def parse_views(views: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(clips=4, crops=3)``. Crops are 1 (center) or 3 (left, right and center
    along the width, at mid-height, whatever the orientation)."""
    try:
        clips_text, crops_text = views.lower().split("x")
        clips, crops = int(clips_text), int(crops_text)
    except ValueError:
        raise InputError(f"views must look like CLIPSxCROPS, e.g. 1x1 or 4x3; got {views!r}") from None
    if not 1 <= clips <= 16 or crops not in (1, 3):
        raise InputError(f"views {views!r}: clips must be 1..16 and crops 1 or 3")
    return clips, crops
