"""Stain augmentation for H&E: random jitter of the haematoxylin, eosin and DAB concentrations (HED space)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandHEDJitterd", "RandHEDJitterD", "RandHEDJitterDict"]


def _pair(value: float | Sequence[float], name: str) -> np.ndarray:
    array = np.broadcast_to(np.asarray(value, np.float64), (3,)).copy()
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"RandHEDJitterd: {name} must be >= 0 (one value or one per stain H, E, D), got {value!r}")
    return array


class RandHEDJitterd(RandomizableTransform, MapTransform):
    """Jitter each stain's concentration of an H&E image, as staining and scanners vary between centres.

    The image is unmixed into haematoxylin, eosin and DAB concentrations (colour deconvolution of Ruifrok and
    Johnston, ``skimage.color.rgb2hed``); each stain ``s`` becomes ``alpha_s * s + beta_s`` with ``alpha_s`` drawn
    from ``U(1 - sigma, 1 + sigma)`` and ``beta_s`` from ``U(-bias, bias)`` (the HED augmentation of Tellez et
    al., 2018, "Whole-slide mitosis detection in H&E breast histology using PHH3 as a reference"), then mixed
    back to RGB. One draw per call, shared by every key (the image and its context stay consistent).

    Args:
        keys: image keys, ``(3, H, W)`` float in [0, 1].
        prob: probability of jittering an item.
        sigma: scale jitter, one value or one per stain (H, E, D).
        bias: shift jitter in concentration units (optical density), one value or one per stain.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 0.5,
        sigma: float | Sequence[float] = 0.05,
        bias: float | Sequence[float] = 0.05,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.sigma, self.bias = _pair(sigma, "sigma"), _pair(bias, "bias")
        self.alpha, self.beta = np.ones(3), np.zeros(3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.alpha = self.R.uniform(1.0 - self.sigma, 1.0 + self.sigma)
            self.beta = self.R.uniform(-self.bias, self.bias)

    def jitter(self, image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """The current draw applied to one ``(3, H, W)`` image in [0, 1] (same type, dtype and device)."""
        from skimage.color import hed2rgb, rgb2hed

        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"RandHEDJitterd: expected a (3, H, W) RGB image, got shape {array.shape}")
        hed = rgb2hed(np.clip(array.transpose(1, 2, 0).astype(np.float64), 0.0, 1.0))
        rgb = hed2rgb(np.maximum(hed * self.alpha + self.beta, 0.0)).transpose(2, 0, 1)
        out = np.clip(rgb, 0.0, 1.0).astype(array.dtype, copy=False)
        if isinstance(image, torch.Tensor):
            result = torch.as_tensor(out, dtype=image.dtype, device=image.device)
            return image.clone().copy_(result) if hasattr(image, "meta") else result
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key])
        return d


RandHEDJitterD = RandHEDJitterDict = RandHEDJitterd
