"""From a tile's probabilities to what a viewer shows: a uint8 label map in the tile's pixels, and its contours.

The output side of every bundle's ``inference.json``: :class:`TileLabeld` makes the 2-D label MONAI Label and
the Model Zoo expect (value = ``channel_def`` index, 0 outside tissue), aligned with the region
:class:`~mixsup_monai.transforms.LoadTiled` read; :class:`TileContoursd` adds the label's polygons in level-0
slide pixels under ``result["annotation"]``, the shape MONAI Label's ``/infer/wsi`` collects from every tile
into DSA / ASAP / QuPath annotations; :class:`MonaiLabelOutputd` hands the label to MONAI Label's writer.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mixsup_monai.transforms.tile_io import region_of
from mixsup_monai.transforms.tissue import tissue_region
from mixsup_monai.visualize.geojson import label_map_to_geojson

__all__ = [
    "MonaiLabelOutputD",
    "MonaiLabelOutputDict",
    "MonaiLabelOutputd",
    "TileContoursD",
    "TileContoursDict",
    "TileContoursd",
    "TileLabelD",
    "TileLabelDict",
    "TileLabeld",
]


class TileLabeld(MapTransform):
    """``(C, h, w)`` probabilities at the network's scale -> ``(1, H, W)`` uint8 label in the region's pixels.

    The label is the most probable channel (``C > 1``) or ``probability > threshold`` (``C == 1``: 1 =
    foreground), 0 outside tissue when ``tissue_only`` (the networks were trained on tissue; on glass they
    extrapolate), then resized (nearest) to the region's ``spatial_shape`` recorded by
    :class:`~mixsup_monai.transforms.LoadTiled`. The result keeps the region's meta data.

    Args:
        keys: prediction keys.
        image_key: the loaded region (for the tissue region and the meta data).
        threshold: foreground threshold of one-channel probabilities.
        tissue_only: set pixels outside tissue to 0.
        closing: closing radius of the tissue region, in network pixels.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image",
        threshold: float = 0.5,
        tissue_only: bool = True,
        closing: int = 2,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.threshold = image_key, float(threshold)
        self.tissue_only, self.closing = bool(tissue_only), int(closing)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image = d[self.image_key]
        region = region_of(getattr(image, "meta", {}), image.shape[-2:])
        tissue = torch.from_numpy(tissue_region(image, self.closing)) if self.tissue_only else None
        for key in self.key_iterator(d):
            prob = torch.as_tensor(d[key]).detach().float().cpu()
            if prob.ndim != 3 or prob.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"TileLabeld: {key!r} must be (C, h, w) probabilities on the grid of {self.image_key!r} "
                    f"{tuple(image.shape)}, got {tuple(prob.shape)}"
                )
            label = prob.argmax(0) if prob.shape[0] > 1 else (prob[0] > self.threshold).long()
            if tissue is not None:
                label[~tissue] = 0
            label = torch.nn.functional.interpolate(
                label[None, None].float(), size=region["spatial_shape"], mode="nearest-exact"
            )[0]
            d[key] = MetaTensor(label.to(torch.uint8), meta=dict(region))
        return d


TileLabelD = TileLabelDict = TileLabeld


class TileContoursd(MapTransform):
    """Polygons of a tile's label map in level-0 slide pixels, as MONAI Label's annotation of one tile.

    Writes ``data[output_key]["annotation"] = {"location", "size", "labels": {name: [r, g, b]}, "elements":
    [{"label": name, "contours": [[[x, y], ...], ...]}]}`` -- one element per region (its outline, then its
    holes), pixel-exact edges. Label value ``k`` is ``classes[k]``; 0 is background and has no polygons.

    Args:
        keys: label keys (``(1, H, W)`` or ``(H, W)`` integer maps from :class:`TileLabeld`).
        classes: class names by label value.
        output_key: where the annotation goes (MONAI Label reads ``"result"``).
        min_area: regions of fewer label pixels are left out.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        classes: Sequence[str] = ("background", "foreground"),
        output_key: str = "result",
        min_area: float = 4,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if isinstance(classes, str) or len(classes) < 2:
            raise ValueError(f"TileContoursd: classes must name background and at least one class, got {classes!r}")
        self.classes, self.output_key, self.min_area = [str(c) for c in classes], output_key, float(min_area)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            region = region_of(getattr(label, "meta", {}), label.shape[-2:])
            values = np.asarray(torch.as_tensor(label).cpu()).reshape(label.shape[-2:])
            downsample = region["level_downsample"]
            collection = label_map_to_geojson(
                values, self.classes, downsample=downsample, origin=region["location"], min_area=self.min_area
            )
            classifications = [f["properties"]["classification"] for f in collection["features"]]
            elements = [
                {"label": c["name"], "contours": f["geometry"]["coordinates"]}
                for c, f in zip(classifications, collection["features"])
            ]
            height, width = region["spatial_shape"]
            result = dict(d.get(self.output_key) or {})
            result["annotation"] = {
                "location": [int(v) for v in region["location"]],
                "size": [round(width * downsample), round(height * downsample)],
                "labels": {c["name"]: c["color"] for c in classifications},
                "elements": elements,
            }
            d[self.output_key] = result
        return d


TileContoursD = TileContoursDict = TileContoursd


class MonaiLabelOutputd(MapTransform):
    """The last step of a tile ``inference.json``: the label as MONAI Label 0.8.5's stock writer takes it.

    * The tile's label (``(1, H, W)`` MetaTensor of :class:`TileLabeld`) is kept under ``label_key`` for this
      project's savers (:class:`~mixsup_monai.handlers.TileLabelSaver`).
    * ``pred`` becomes the ``(W, H)`` uint8 array -- MONAI's x-first order of 2-D images (``LoadImage`` reads a
      PNG so); MONAI Label's writer transposes it back when it writes the label PNG.
    * On a tile of ``/infer/wsi`` (the request sets ``result_write_to_file`` false) only ``result["annotation"]``
      is used, and MONAI Label 0.8.5 tests the writer's return value -- then the label array itself -- for
      truth (``if result_file_name and ...``), which raises for any array of more than one element: ``pred``
      becomes a ``(1, 1)`` array there.
    * ``image`` is dropped: MONAI Label's ``Restored`` would resize ``pred`` to the image's ``spatial_shape``,
      which is in the tile's ``(H, W)`` order.

    Args:
        keys: the label key (``"pred"``).
        label_key: where the tile's own ``(1, H, W)`` label is kept.
        image_key: the loaded region, dropped.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        label_key: str = "tile_label",
        image_key: str = "image",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.image_key = label_key, image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            d[self.label_key] = label
            values = np.asarray(torch.as_tensor(label).cpu(), dtype=np.uint8).reshape(label.shape[-2:])
            whole_tile = d.get("result_write_to_file", True)
            d[key] = np.ascontiguousarray(values.T) if whole_tile else np.zeros((1, 1), np.uint8)
        d.pop(self.image_key, None)
        return d


MonaiLabelOutputD = MonaiLabelOutputDict = MonaiLabelOutputd
