"""Pictures a person looks at: heat-map and label overlays on slide thumbnails; QuPath GeoJSON of maps and patches."""

from __future__ import annotations

from mixsup_monai.visualize.geojson import (
    label_map_to_geojson,
    patches_to_geojson,
    probability_map_to_geojson,
    write_geojson,
)
from mixsup_monai.visualize.overlay import heatmap_overlay, label_overlay, save_png

__all__ = [
    "heatmap_overlay",
    "label_map_to_geojson",
    "label_overlay",
    "patches_to_geojson",
    "probability_map_to_geojson",
    "save_png",
    "write_geojson",
]
