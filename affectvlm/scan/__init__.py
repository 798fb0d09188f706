"""The scan pipeline: read 3D/4D face scans, normalise them, render views, pool 4D sequences.

scan = load_scan("F0001_HA04WH_F3D.wrl")      # Scan: (N, 3) float32 mm vertices, faces, uv...
scan = normalize_scan(scan)                     # nose tip at the origin, fixed frame
views = render_views(scan)                      # (1, 3, 224, 224, 3) uint8: frontal, left, right
"""

from .bnt import write_bnt
from .io import SUPPORTED_EXTENSIONS, load_scan
from .types import Scan, ScanError
from .writers import write_obj, write_ply, write_wrl

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Scan",
    "ScanError",
    "load_scan",
    "write_bnt",
    "write_obj",
    "write_ply",
    "write_wrl",
]
