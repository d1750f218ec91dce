"""Slide maps, class maps and top-K patches as GeoJSON that QuPath imports (File > Import objects / drag and drop).

Coordinates are level-0 pixels of the slide (QuPath's image coordinates: x to the right, y down, origin at the
top-left corner). A class map is traced along its pixel edges, so that with ``simplify=0`` a polygon covers
exactly the pixels of its region: its area is the region's pixel count times ``downsample ** 2``.

Rings follow RFC 7946: closed (first vertex repeated last), exteriors with a positive shoelace area
(counter-clockwise in x-right / y-up axes, the convention of shapely's ``orient`` and of GIS tools), holes
negative. Regions are 4-connected; where two pixels of one region touch only at a corner the hole rings touch
the exterior (or each other) at that vertex, which keeps every ring simple (OGC-valid polygons).

Each feature's ``properties`` follow QuPath's layout::

    {"objectType": "annotation", "classification": {"name": "Tumor", "color": [230, 25, 75]},
     "measurements": {"score": 0.93}}            # measurements only on patches
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixsup_monai.utils.errors import InputError
from mixsup_monai.utils.io import write_json_atomic
from mixsup_monai.visualize.overlay import DEFAULT_CLASS_COLOURS

__all__ = [
    "OBJECT_TYPES",
    "label_map_to_geojson",
    "patches_to_geojson",
    "probability_map_to_geojson",
    "write_geojson",
]

#: QuPath object types a feature may be imported as.
OBJECT_TYPES = ("annotation", "detection", "tile")

# pixel-edge directions in (x, y); a left turn is d + 1 (mod 4), a right turn d + 3
_STEP = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], np.int64)


def _check_number(name: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0) or value < 0:
        kind = "a positive" if positive else "a non-negative"
        raise InputError(f"{name} must be {kind} finite number", name, f"got {value!r}")
    return float(value)


def _check_origin(origin: Sequence[float]) -> tuple[float, float]:
    if len(origin) != 2 or not all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in origin):
        raise InputError("origin must be two finite numbers (x, y) in level-0 pixels", "origin", f"got {origin!r}")
    return float(origin[0]), float(origin[1])


def _check_object_type(object_type: str) -> str:
    if object_type not in OBJECT_TYPES:
        raise InputError(
            f"unknown QuPath object type {object_type!r}", "object_type", f"expected one of {OBJECT_TYPES}"
        )
    return object_type


def _colour(index: int, colors: Mapping[str, Sequence[int]] | None, name: str) -> list[int]:
    if colors is not None and name in colors:
        rgb = [int(v) for v in colors[name]]
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise InputError(f"colour of class {name!r} must be three integers in [0, 255]", "colors", f"got {rgb}")
        return rgb
    palette = DEFAULT_CLASS_COLOURS[1:]  # entry 0 is the transparent background of overlays: black
    return list(DEFAULT_CLASS_COLOURS[0] if index == 0 else palette[(index - 1) % len(palette)])


def _properties(object_type: str, name: str, rgb: Sequence[int]) -> dict:
    return {"objectType": object_type, "classification": {"name": name, "color": [int(v) for v in rgb]}}


def _trace_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Closed pixel-edge rings of one 4-connected ``(H, W)`` bool region, vertices ``(x, y)`` in map pixels.

    Every boundary edge is directed with the region on its left, so exteriors have a positive shoelace area and
    holes a negative one. At a vertex where two region pixels touch only diagonally (two edges leave it) the ring
    turns right: it hugs the background there, so each ring stays simple.

    Returns:
        ``(N + 1, 2)`` int64 arrays, first vertex repeated last, collinear vertices removed.
    """
    h, w = mask.shape
    pad = np.pad(mask, 1)
    inner = pad[1:-1, 1:-1]
    rows, cols, dirs = [], [], []
    # neighbour offset (dr, dc) of the background pixel, the edge's direction, the start corner of the edge
    for (dr, dc), d, (sx, sy) in (((-1, 0), 0, (0, 0)), ((0, 1), 1, (1, 0)), ((1, 0), 2, (1, 1)), ((0, -1), 3, (0, 1))):
        r, c = np.nonzero(inner & ~pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w])
        rows.append(r + sy)
        cols.append(c + sx)
        dirs.append(np.full(r.size, d, np.int64))
    y, x, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(dirs)
    key = y * (w + 1) + x
    order = np.lexsort((d, key))  # by start vertex, then direction
    key, x, y, d = key[order], x[order], y[order], d[order]
    end = (y + _STEP[d, 1]) * (w + 1) + (x + _STEP[d, 0])
    first = np.searchsorted(key, end)
    # a start vertex holds one edge, or two at a diagonal touch: then take the one turning right
    two = (first + 1 < key.size) & (key[np.minimum(first + 1, key.size - 1)] == end)
    take_second = two & (d[np.minimum(first + 1, key.size - 1)] == (d + 3) % 4)
    nxt = np.where(take_second, first + 1, first)
    return _rings_from_successors(nxt, x, y, d)


def _rings_from_successors(nxt: np.ndarray, x: np.ndarray, y: np.ndarray, d: np.ndarray) -> list[np.ndarray]:
    """The cycles of the edge permutation ``nxt`` as closed vertex rings, keeping only the corners."""
    seen = np.zeros(nxt.size, bool)
    rings = []
    nxt_list = nxt.tolist()
    for start in range(nxt.size):
        if seen[start]:
            continue
        cycle = [start]
        edge = nxt_list[start]
        while edge != start:
            cycle.append(edge)
            edge = nxt_list[edge]
        idx = np.asarray(cycle)
        seen[idx] = True
        corner = idx[d[idx] != d[np.roll(idx, 1)]]  # an edge that changes direction starts at a corner
        ring = np.stack([x[corner], y[corner]], axis=1)
        rings.append(np.concatenate([ring, ring[:1]]))
    return rings


def _signed_area(ring: np.ndarray) -> float:
    xs, ys = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.sum(xs[:-1] * ys[1:] - xs[1:] * ys[:-1]) / 2.0)


def _simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray | None:
    """Douglas-Peucker on a closed ring; ``None`` when fewer than three distinct vertices or its sign flips."""
    from skimage.measure import approximate_polygon

    out = approximate_polygon(ring.astype(np.float64), tolerance)
    if len(out) < 4 or np.sign(_signed_area(out)) != np.sign(_signed_area(ring)):
        return None
    return out


def _to_level0(ring: np.ndarray, downsample: float, origin: tuple[float, float]) -> list:
    pts = ring * downsample + np.asarray(origin)
    if np.all(pts == np.round(pts)):  # whole pixels: integers keep the file small and exact
        return pts.astype(np.int64).tolist()
    return pts.tolist()


def _region_polygons(
    mask: np.ndarray, min_area: float, simplify: float, downsample: float, origin: tuple[float, float]
) -> list[list]:
    """GeoJSON polygon coordinates (exterior first, then holes) of each 4-connected region of ``mask``."""
    from scipy import ndimage

    labelled, _ = ndimage.label(mask)  # default structure: 4-connectivity
    polygons = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        region = labelled[box] == index
        if region.sum() < max(min_area, 1):
            continue
        offset = np.array([box[1].start, box[0].start])
        rings = [ring + offset for ring in _trace_rings(region)]
        if simplify > 0:
            rings = [r for r in (_simplify_ring(ring, simplify) for ring in rings) if r is not None]
        exterior = [r for r in rings if _signed_area(r) > 0]
        if len(exterior) != 1:  # simplified away
            continue
        holes = [r for r in rings if _signed_area(r) < 0]
        polygons.append([_to_level0(r, downsample, origin) for r in exterior + holes])
    return polygons


def _check_labels(labels: np.ndarray, classes: Sequence[str], ignore: Sequence[int]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError("class map must be 2-D (H, W)", "labels", f"got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError("class map must hold integer class indices", "labels", f"got dtype {labels.dtype}")
    if isinstance(classes, str) or len(classes) == 0:
        raise InputError("classes must be a non-empty list of class names", "classes", f"got {classes!r}")
    values = np.unique(labels)
    beyond = [int(v) for v in values if v not in ignore and not 0 <= v < len(classes)]
    if beyond:
        raise InputError(
            f"class map holds class index {beyond[0]}, beyond the {len(classes)} class name(s) {list(classes)}",
            "labels",
            f"give one name per class index 0..{max(beyond)} (values {list(ignore)} are ignored)",
        )
    return labels


def label_map_to_geojson(
    labels: np.ndarray,
    classes: Sequence[str],
    downsample: float = 1.0,
    origin: Sequence[float] = (0, 0),
    colors: Mapping[str, Sequence[int]] | None = None,
    min_area: float = 0,
    ignore: Sequence[int] = (255,),
    simplify: float = 0.0,
    object_type: str = "annotation",
    include_background: bool = False,
    merge: bool = False,
) -> dict:
    """A class map as a GeoJSON FeatureCollection in level-0 pixels, one Polygon feature per region and class.

    Args:
        labels: ``(H, W)`` integer class map (value = index into ``classes``), e.g. a slide map.
        classes: class names by index; index 0 is background and is skipped unless ``include_background``.
        downsample: level-0 pixels per map pixel (a slide map of level 3 of a 2x pyramid: 8).
        origin: level-0 ``(x, y)`` of the map's top-left corner (a map of a crop of the slide).
        colors: ``{class name: (r, g, b)}``; default: the overlay palette.
        min_area: regions of fewer map pixels are dropped (specks).
        ignore: values that are no class (unknown / outside tissue), never exported.
        simplify: Douglas-Peucker tolerance in map pixels; ``0`` keeps the exact pixel edges. Simplified rings
            are no longer exact and are not checked for self-intersections.
        object_type: QuPath object type of the features, one of :data:`OBJECT_TYPES`.
        include_background: export class 0 too.
        merge: one MultiPolygon feature per class instead of one Polygon feature per region.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``, JSON-serialisable (plain lists, ints and floats).

    Raises:
        InputError: a map that is not 2-D integer, a class index beyond ``classes``, ``downsample <= 0``.

    Example:
        >>> m = np.zeros((4, 4), np.uint8); m[1:3, 1:3] = 1
        >>> label_map_to_geojson(m, ["normal", "tumour"], downsample=8)["features"][0]["geometry"]["coordinates"]
        [[[8, 8], [24, 8], [24, 24], [8, 24], [8, 8]]]
    """
    labels = _check_labels(labels, classes, ignore)
    downsample = _check_number("downsample", downsample, positive=True)
    min_area = _check_number("min_area", min_area)
    simplify = _check_number("simplify", simplify)
    origin = _check_origin(origin)
    object_type = _check_object_type(object_type)
    features = []
    for value in np.unique(labels).tolist():
        if value in ignore or (value == 0 and not include_background):
            continue
        name = str(classes[value])
        properties = _properties(object_type, name, _colour(value, colors, name))
        polygons = _region_polygons(labels == value, min_area, simplify, downsample, origin)
        if merge and polygons:
            geometries = [{"type": "MultiPolygon", "coordinates": polygons}]
        else:
            geometries = [{"type": "Polygon", "coordinates": p} for p in polygons]
        for geometry in geometries:
            features.append({"type": "Feature", "geometry": geometry, "properties": dict(properties)})
    return {"type": "FeatureCollection", "features": features}


def probability_map_to_geojson(
    prob: np.ndarray,
    threshold: float = 0.5,
    class_name: str = "Tumor",
    classes: Sequence[str] | None = None,
    downsample: float = 1.0,
    origin: Sequence[float] = (0, 0),
    colors: Mapping[str, Sequence[int]] | None = None,
    min_area: float = 0,
    simplify: float = 0.0,
    object_type: str = "annotation",
) -> dict:
    """A probability map thresholded into a class map, then :func:`label_map_to_geojson` (MixSup's tumour map).

    Args:
        prob: ``(H, W)`` probability of ``class_name`` (pixels ``>= threshold`` are exported), or ``(C, H, W)``
            class probabilities (each pixel takes its most probable class; class 0 is background and pixels whose
            top probability is below ``threshold`` are background). NaN pixels (no prediction) are skipped.
        threshold: probability in [0, 1].
        class_name: name of the class of an ``(H, W)`` map.
        classes: names of the ``C`` classes of a ``(C, H, W)`` map.
        downsample, origin, colors, min_area, simplify, object_type: as in :func:`label_map_to_geojson`.

    Returns:
        A GeoJSON FeatureCollection.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if not 0 <= _check_number("threshold", threshold) <= 1:
        raise InputError("threshold must be a probability in [0, 1]", "threshold", f"got {threshold!r}")
    if prob.ndim == 2:
        labels, names = (prob >= threshold).astype(np.uint8), ["background", class_name]
    elif prob.ndim == 3:
        if classes is None or len(classes) != prob.shape[0]:
            raise InputError(
                "a (C, H, W) probability map needs one class name per channel",
                "classes",
                f"got {prob.shape[0]} channels and classes={classes!r}",
            )
        filled = np.nan_to_num(prob, nan=-1.0)
        labels = np.where(filled.max(axis=0) >= threshold, filled.argmax(axis=0), 0).astype(np.uint8)
        names = list(classes)
    else:
        raise InputError("probability map must be (H, W) or (C, H, W)", "prob", f"got shape {prob.shape}")
    labels[np.isnan(prob).any(axis=0) if prob.ndim == 3 else np.isnan(prob)] = 255
    return label_map_to_geojson(
        labels, names, downsample, origin, colors, min_area, (255,), simplify, object_type=object_type
    )


def patches_to_geojson(
    locations: np.ndarray,
    size: int | Sequence[int],
    scores: np.ndarray | Mapping[str, np.ndarray] | None = None,
    class_name: str = "Tumor",
    top_k: int | None = None,
    color: Sequence[int] | None = None,
    object_type: str = "detection",
) -> dict:
    """Patches (e.g. MixSup's top-K) as square features with their scores as QuPath measurements.

    Args:
        locations: ``(N, 2)`` level-0 ``(x, y)`` of the patches' top-left corners.
        size: level-0 patch edge ``s`` or ``(w, h)``.
        scores: ``(N,)`` scores, stored as ``measurements: {"score": value}``, or ``{name: (N,)}`` for several.
        class_name: the features' classification.
        top_k: keep only the ``top_k`` highest-scoring patches (by ``scores``, or its first entry), best first.
        color: ``(r, g, b)`` of the class; default: the palette's first class colour.
        object_type: QuPath object type, one of :data:`OBJECT_TYPES` (``"tile"`` or ``"detection"`` for patches).

    Returns:
        A GeoJSON FeatureCollection of Polygon squares ``[x, y] -> [x + w, y] -> [x + w, y + h] -> [x, y + h]``.
    """
    locations = np.asarray(locations, dtype=np.float64).reshape(-1, 2) if len(locations) else np.zeros((0, 2))
    w, h = (size, size) if np.isscalar(size) else tuple(size)
    w, h = _check_number("size", w, positive=True), _check_number("size", h, positive=True)
    _check_object_type(object_type)
    if scores is None:
        scores = {}
    elif not isinstance(scores, Mapping):
        scores = {"score": scores}
    measurements = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in scores.items()}
    for name, values in measurements.items():
        if values.shape[0] != locations.shape[0] or not np.all(np.isfinite(values)):
            raise InputError(
                f"scores {name!r} must hold one finite number per patch",
                "scores",
                f"got {values.shape[0]} values for {locations.shape[0]} patches",
            )
    order = np.arange(locations.shape[0])
    if top_k is not None:
        ranked = next(iter(measurements.values()), None)
        order = order if ranked is None else np.argsort(-ranked, kind="stable")
        order = order[: max(int(top_k), 0)]
    properties = _properties(object_type, class_name, color if color is not None else _colour(1, None, class_name))
    features = []
    for i in order.tolist():
        x, y = locations[i]
        ring = np.array([(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)])
        props = dict(properties, measurements={n: float(v[i]) for n, v in measurements.items()})
        geometry = {"type": "Polygon", "coordinates": [_to_level0(ring, 1.0, (0.0, 0.0))]}
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, collection: Mapping[str, Any]) -> Path:
    """Write a FeatureCollection to ``path`` atomically (a reader sees the old file or the new one, never a part).

    Args:
        path: output ``.geojson`` file (its folder is created).
        collection: a ``{"type": "FeatureCollection", "features": [...]}`` dict.

    Returns:
        The path written.
    """
    if not isinstance(collection, Mapping) or collection.get("type") != "FeatureCollection":
        raise InputError("not a GeoJSON FeatureCollection", path, "expected {'type': 'FeatureCollection', ...}")
    return write_json_atomic(path, dict(collection), indent=None)
