"""Pictures a person looks at: heat-map and label overlays on slide thumbnails."""

from __future__ import annotations

from mixsup_monai.visualize.overlay import heatmap_overlay, label_overlay, save_png

__all__ = ["heatmap_overlay", "label_overlay", "save_png"]
