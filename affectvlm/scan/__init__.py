"""The scan pipeline: read 3D/4D face scans, normalise them, render views, pool 4D sequences.

scan = load_scan("F0001_HA04WH_F3D.wrl")      # Scan: (N, 3) float32 mm vertices, faces, uv...
scan = normalize_scan(scan)                     # nose tip at the origin, unit-radius frame
views = render_views(scan)                      # (1, 3, 224, 224, 3) uint8: frontal, left, right
dyn = render_sequence([load_scan(p) for p in frames])  # (3, 224, 224, 3) dynamic images
"""

from .bnt import write_bnt
from .io import SUPPORTED_EXTENSIONS, load_scan
from .normalize import find_nose_tip, normalize_scan, normalize_sequence
from .pcd import write_pcd
from .render import (
    DEFAULT_EXTENT,
    DEFAULT_PIVOT,
    DEFAULT_VIEWS,
    MODES,
    NORMAL_CHANNELS,
    VIEW_NAMES,
    Fragments,
    pixel_centers,
    rasterize,
    render_depth,
    render_views,
    view_rotation,
)
from .sequence import rank_pool, rank_pool_weights, render_sequence, to_uint8
from .types import Scan, ScanError
from .writers import write_obj, write_ply, write_wrl

__all__ = [
    "DEFAULT_EXTENT",
    "DEFAULT_PIVOT",
    "DEFAULT_VIEWS",
    "MODES",
    "NORMAL_CHANNELS",
    "SUPPORTED_EXTENSIONS",
    "VIEW_NAMES",
    "Fragments",
    "Scan",
    "ScanError",
    "find_nose_tip",
    "load_scan",
    "normalize_scan",
    "normalize_sequence",
    "pixel_centers",
    "rank_pool",
    "rank_pool_weights",
    "rasterize",
    "render_depth",
    "render_sequence",
    "render_views",
    "to_uint8",
    "view_rotation",
    "write_bnt",
    "write_obj",
    "write_pcd",
    "write_ply",
    "write_wrl",
]
