"""Label super-resolution losses: intra-, inter- and intra+inter-instance statistics matching."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, StrEnum, look_up_option
from torch.nn.modules.loss import _Loss

from mixsup_monai.methods.lsr.label_stats import LabelStatsTable, z_to_row_index

__all__ = [
    "LSRDistance",
    "LSRFormulation",
    "LSRVariance",
    "LabelSuperResolutionLoss",
    "SingletonGroups",
    "block_statistics",
    "effective_target_std",
    "group_index_from_labels",
    "group_statistics",
    "high_res_cross_entropy",
    "lsr_distance",
]

#: offset inside the log term of the original LSR code's interval distance (Malkin et al., ICLR 2019).
INTERVAL_LOG_OFFSET = 0.03


class LSRFormulation(StrEnum):
    """How the predicted count distribution is modelled (Zhao et al., Sec. 2, Fig. 2)."""

    INTRA = "intra"  # per block: (μ_k, σ²_k), Eq. 3 (Malkin et al. 2019)
    INTER = "inter"  # across the blocks of a group sharing z: (mean_k μ_k, var_k μ_k), Eq. 8
    INTRA_INTER = "intra_inter"  # across blocks, pixels Bernoulli: Eq. 11 / 18


class LSRDistance(StrEnum):
    """The distance D between the predicted N(μ, σ²) and the table's N(η, (αρ)²), per class."""

    CROSS_ENTROPY = "cross_entropy"  # corrected reading of Eq. 5 / 9 (METHODS.md §2), the default
    ONE_SIDED = "one_sided"  # −log N(η; μ, σ² + (αρ)²)
    INTERVAL = "interval"  # original LSR code: relu(|μ−η|−ρ)² / (σ²+ρ²) + log(σ² + 0.03)


class LSRVariance(StrEnum):
    """Normalisation of the per-block variance σ²_k of the predicted class fraction."""

    PER_PIXEL = "per_pixel"  # mean_ij p(1−p), main-text Eq. 3 (default)
    MEAN_OF_INDEPENDENT = "mean_of_independent"  # 1/|X_k|² Σ_ij p(1−p), appendix Eq. 14 / 16


class SingletonGroups(StrEnum):
    """What the ``inter`` formulation does with a group of one block (its var_k μ_k is 0)."""

    INTRA = "intra"  # use the block's own σ²_k: the group's term becomes the intra-instance term
    SKIP = "skip"  # leave the group out of the loss


def block_statistics(
    probs: torch.Tensor, variance: LSRVariance | str = LSRVariance.PER_PIXEL
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the predicted fraction of each class in each block.

    μ_{l,k} = 1/|X_k| Σ_ij p(y_ij = l); σ²_{l,k} = 1/|X_k| Σ_ij p(1 − p) (Zhao et al. Eq. 3, ``per_pixel``)
    or 1/|X_k|² Σ_ij p(1 − p) (appendix Eq. 14, ``mean_of_independent``: the variance of a mean of
    independent Bernoulli pixels, |X_k| times smaller).

    Args:
        probs: (B, L, *spatial) per-pixel class probabilities.
        variance: "per_pixel" or "mean_of_independent".

    Returns:
        (mu, var), each (B, L).
    """
    variance = look_up_option(variance, LSRVariance)
    flat = probs.flatten(2)
    mu = flat.mean(dim=2)
    var = (flat * (1.0 - flat)).mean(dim=2)
    if variance == LSRVariance.MEAN_OF_INDEPENDENT:
        var = var / flat.shape[2]
    return mu, var


def group_index_from_labels(target_z: torch.Tensor, group_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Assign every block of a batch to a group.

    Without ``group_ids`` the groups are the distinct z values of the batch; with ``group_ids`` they are the
    distinct ids, and every group must hold a single z.

    Args:
        target_z: (B,) integer low-resolution labels.
        group_ids: optional (B,) integer group ids.

    Returns:
        (group_index, num_groups): (B,) long tensor of group numbers in [0, G) (groups ordered by sorted z /
        sorted id) and G.

    Raises:
        ValueError: ``group_ids`` has the wrong shape, or a group mixes z values.
    """
    if group_ids is None:
        _, index = torch.unique(target_z, sorted=True, return_inverse=True)
        return index, int(index.max().item()) + 1 if index.numel() else 0
    group_ids = torch.as_tensor(group_ids, device=target_z.device).reshape(-1)
    if group_ids.shape != target_z.shape:
        raise ValueError(f"group_ids has shape {tuple(group_ids.shape)}, expected (B,) = {tuple(target_z.shape)}")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids has dtype {group_ids.dtype}, expected an integer tensor")
    unique_ids, index = torch.unique(group_ids, sorted=True, return_inverse=True)
    num_groups = unique_ids.numel()
    z = target_z.to(torch.long)
    z_min = torch.full((num_groups,), torch.iinfo(torch.long).max, device=z.device).scatter_reduce(
        0, index, z, reduce="amin"
    )
    z_max = torch.full((num_groups,), torch.iinfo(torch.long).min, device=z.device).scatter_reduce(
        0, index, z, reduce="amax"
    )
    mixed = (z_min != z_max).nonzero().reshape(-1)
    if mixed.numel():
        g = int(mixed[0])
        found = sorted(set(z[index == g].tolist()))
        raise ValueError(
            f"group_ids: group {unique_ids[g].item()} mixes low-resolution labels z = {found}; every block "
            "of a group must share one z (fix the sampler, or omit group_ids to group the batch by z)"
        )
    return index, num_groups


def group_statistics(
    mu: torch.Tensor,
    var: torch.Tensor,
    group_index: torch.Tensor,
    num_groups: int,
    formulation: LSRFormulation | str = LSRFormulation.INTRA_INTER,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Statistics of the class fraction across the blocks of each group (blocks sharing z).

    μ_{l,z} = mean_k μ_{l,k} (Eq. 8 / 11); the between-block variance is the population variance
    var_k μ_{l,k} = 1/N Σ_k (μ_{l,k} − μ_{l,z})² (Eq. 8, 1/N as printed, not 1/(N−1)).

    * ``inter`` (Eq. 8): σ²_{l,z} = var_k μ_{l,k}.
    * ``intra_inter`` (Eq. 11 / 18): σ²_{l,z} = mean_k σ²_{l,k} + mean_k μ²_{l,k} − μ²_{l,z}, computed as
      mean_k σ²_{l,k} + var_k μ_{l,k} (the same quantity, never negative in floating point).

    A group of one block has var_k μ = 0: for ``inter`` its σ² is then ε only (see the loss's
    ``singleton_groups``); for ``intra_inter`` its σ² is the block's own σ²_k (the intra-instance term).

    Args:
        mu: (B, L) per-block means μ_{l,k} (from :func:`block_statistics`).
        var: (B, L) per-block variances σ²_{l,k}.
        group_index: (B,) long group numbers in [0, G).
        num_groups: G.
        formulation: "inter" or "intra_inter".

    Returns:
        (mu_g, var_g, counts): (G, L), (G, L) and (G,) (blocks per group).
    """
    formulation = look_up_option(formulation, LSRFormulation)
    if formulation == LSRFormulation.INTRA:
        raise ValueError("group_statistics: formulation 'intra' has no groups; expected 'inter' or 'intra_inter'")
    counts = torch.bincount(group_index, minlength=num_groups).to(mu.dtype)
    zeros = mu.new_zeros((num_groups, mu.shape[1]))
    mu_g = zeros.index_add(0, group_index, mu) / counts[:, None]
    var_between = zeros.index_add(0, group_index, (mu - mu_g[group_index]) ** 2) / counts[:, None]
    if formulation == LSRFormulation.INTER:
        return mu_g, var_between, counts
    var_within = zeros.index_add(0, group_index, var) / counts[:, None]
    return mu_g, var_within + var_between, counts


def effective_target_std(rho: torch.Tensor, alpha: float = 1.0, rho_floor: float = 0.0) -> torch.Tensor:
    """The target standard deviation α · max(ρ, ρ_floor) (appendix A, Eq. 17: α scales the table's ρ).

    The floor applies to the table's ρ (e.g. ρ_floor = 0.01 treats "0.0 ± 0.0 %" rows as ± 1 %), then α.
    """
    return alpha * rho.clamp(min=rho_floor)


def lsr_distance(
    mu: torch.Tensor,
    var: torch.Tensor,
    eta: torch.Tensor,
    target_std: torch.Tensor,
    distance: LSRDistance | str = LSRDistance.CROSS_ENTROPY,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Distance between the predicted count distribution N(μ, σ²) and the table's N(η, τ²), τ = αρ.

    * ``cross_entropy`` (default; METHODS.md §2, the corrected reading of Zhao et al. Eq. 5 / 9: the expected
      negative log-likelihood of C ~ N(η, τ²) under N(μ, σ²)):
      D = ½ log 2π(σ² + ε) + (τ² + (η − μ)²) / (2(σ² + ε)); minimal at μ = η and σ² + ε = τ².
    * ``one_sided``: −log N(η; μ, σ² + τ²) = ½ log 2π(σ² + τ² + ε) + (η − μ)² / (2(σ² + τ² + ε));
      it only ever shrinks σ².
    * ``interval`` (the original LSR code of Malkin et al. 2019, whose σ² is Eq. 14's and whose ε is 1e-6):
      D = relu(|μ − η| − τ)² / (σ² + τ² + ε) + log(σ² + 0.03); no penalty while μ is within τ of η.

    The printed Eq. 5 / 9, ½ σ²(η − μ)² / (ρ² + σ²)² + ½ log 2πσ², is unbounded below (σ² → 0 gives −∞) and is
    deliberately not offered.

    Args:
        mu: (N, L) predicted means.
        var: (N, L) predicted variances σ² (≥ 0).
        eta: (N, L) table means η.
        target_std: (N, L) target standard deviations τ = α · max(ρ, ρ_floor) (:func:`effective_target_std`).
        distance: "cross_entropy", "one_sided" or "interval".
        eps: ε added to the variance in every denominator and log (bounds D below at ½ log 2πε when τ = 0).

    Returns:
        (N, L) per-class distances.
    """
    distance = look_up_option(distance, LSRDistance)
    tau2 = target_std**2
    if distance == LSRDistance.CROSS_ENTROPY:
        s = var + eps
        return 0.5 * torch.log(2.0 * math.pi * s) + (tau2 + (eta - mu) ** 2) / (2.0 * s)
    if distance == LSRDistance.ONE_SIDED:
        s = var + tau2 + eps
        return 0.5 * torch.log(2.0 * math.pi * s) + (eta - mu) ** 2 / (2.0 * s)
    excess = F.relu((mu - eta).abs() - target_std)
    return excess**2 / (var + tau2 + eps) + torch.log(var + INTERVAL_LOG_OFFSET)


def high_res_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    softmax: bool = True,
    ignore_index: int = 255,
    eps: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel cross-entropy over the labelled pixels of a batch (the "LSR & high res" term, Zhao et al. 3.1.4).

    Args:
        input: (B, L, *spatial) logits (``softmax=True``) or probabilities (``softmax=False``).
        target: (B, *spatial) or (B, 1, *spatial) integer label maps; ``ignore_index`` marks unlabelled
            pixels (a block without high-resolution labels is all ``ignore_index`` and adds nothing).
        softmax: whether ``input`` holds logits.
        ignore_index: label of unlabelled pixels.
        eps: probabilities are clamped to ≥ eps before the log when ``softmax=False``.

    Returns:
        (sum, count): the summed cross-entropy over labelled pixels (0-dim) and their number (0-dim long).

    Raises:
        ValueError: shape mismatch or labels outside [0, L) other than ``ignore_index``.
    """
    if target.ndim == input.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(
            f"high_res_target has shape {tuple(target.shape)}, expected (B, *spatial) = "
            f"{tuple(input.shape[:1] + input.shape[2:])} matching input {tuple(input.shape)}"
        )
    target = target.to(device=input.device, dtype=torch.long)
    labelled = target != ignore_index
    bad = labelled & ((target < 0) | (target >= input.shape[1]))
    if bool(bad.any()):
        raise ValueError(
            f"high_res_target holds labels {sorted(set(target[bad].tolist()))[:10]}: expected values in "
            f"[0, {input.shape[1]}) or ignore_index = {ignore_index}"
        )
    log_p = F.log_softmax(input, dim=1) if softmax else torch.log(input.clamp(min=eps))
    total = F.nll_loss(log_p, target, ignore_index=ignore_index, reduction="sum")
    return total, labelled.sum()


def _as_table(label_stats: LabelStatsTable | str | os.PathLike | Sequence[torch.Tensor]) -> LabelStatsTable:
    if isinstance(label_stats, LabelStatsTable):
        return label_stats.validate()
    if isinstance(label_stats, (str, os.PathLike)):
        return LabelStatsTable.load(label_stats)
    if isinstance(label_stats, (tuple, list)) and len(label_stats) == 3:
        eta, rho, z_values = (torch.as_tensor(t).detach().cpu() for t in label_stats)
        if eta.ndim != 2:
            raise ValueError(f"label_stats eta has shape {tuple(eta.shape)}, expected (Z, L)")
        classes = tuple(f"class_{i}" for i in range(eta.shape[1]))
        table = LabelStatsTable(
            classes=classes,
            z_values=tuple(int(z) for z in z_values.reshape(-1).tolist()),
            mean=eta.double().numpy(),
            std=rho.double().numpy(),
            source="tensors",
        )
        return table.validate()
    raise TypeError(
        f"label_stats is a {type(label_stats).__name__}; expected a LabelStatsTable, a path to its JSON "
        "file, or a tuple (eta (Z, L), rho (Z, L), z_values (Z,))"
    )


class LabelSuperResolutionLoss(_Loss):
    """Label super-resolution loss: match predicted label-count statistics to a table p(c_l | z).

    Zhao et al., "Label super resolution with inter-instance loss" (intra-instance Eq. 3 / 5, inter-instance
    Eq. 8 / 9, intra+inter-instance Eq. 11 / 18, α of appendix A) and Malkin et al., "Label super-resolution
    networks", ICLR 2019 (intra-instance). The distance is the corrected Gaussian cross-entropy of
    ``mixsup_monai`` METHODS.md §2 by default (see :func:`lsr_distance`).

    For a batch of blocks X_k with low-resolution labels z_k, p = per-pixel class probabilities:

    1. per block (:func:`block_statistics`): μ_{l,k} = mean_ij p, σ²_{l,k} = mean_ij p(1−p) (or /|X_k| more).
    2. per unit:

       * ``intra``: each block is a unit, (μ_{l,k}, σ²_{l,k}) vs (η_{l,z_k}, τ_{l,z_k}).
       * ``inter`` / ``intra_inter``: the blocks sharing z (or ``group_ids``) form a group; the group's
         (μ_{l,z}, σ²_{l,z}) from :func:`group_statistics` vs (η_{l,z}, τ_{l,z}). A batch may hold several
         groups (``GroupedBatchSampler`` yields 2 groups of G blocks); two sampled groups with the same z are
         merged unless ``group_ids`` separates them. A group of one block under ``inter`` has no
         between-block variance: ``singleton_groups="intra"`` (default) uses the block's own σ²_k instead
         (a warning is issued), ``"skip"`` leaves it out. Under ``intra_inter`` a group of one reduces to the
         intra-instance term naturally.

    3. per unit: Σ_l D(μ_l, σ²_l; η_l, τ_l) with τ = α · max(ρ, ρ_floor); then ``reduction`` over units
       (``mean``: every block / group weighs the same regardless of its size).
    4. optional "LSR & high res": + ``high_res_weight`` × pixel cross-entropy averaged (``mean``) or summed
       (``sum``) over the pixels of ``high_res_target`` that are not ``ignore_index``.

    Tables with ρ = 0 (e.g. paper Table 1, row 0–20 %) give a finite loss and gradients with every distance
    thanks to ε; ``rho_floor`` raises such ρ explicitly.

    Args:
        label_stats: a :class:`~mixsup_monai.methods.lsr.LabelStatsTable`, the path of its JSON file, or
            a tuple of tensors (eta (Z, L), rho (Z, L), z_values (Z,)). Validated on construction.
        formulation: "intra", "inter" or "intra_inter" (default).
        distance: "cross_entropy" (default), "one_sided" or "interval".
        variance: "per_pixel" (Eq. 3, default) or "mean_of_independent" (Eq. 14). Eq. 14's σ² is |X_k| times
            smaller (≈ 0.25 / 57600 at 240 x 240 px), so the default ε = 1e-4 dominates it: lower ``eps``
            (e.g. 1e-8) to study that reading. The original LSR code's ``interval`` distance used Eq. 14.
        alpha: α scaling the table's ρ (appendix A; paper's best 0.8; 1.0 = un-scaled).
        rho_floor: lower bound applied to ρ before α (0 = none).
        eps: ε added to σ² (default 1e-4; keep it below the smallest (αρ)² that matters).
        softmax: ``input`` holds logits to be soft-maxed over channels (default); False: probabilities.
        high_res_weight: weight of the pixel cross-entropy term (0 = off).
        ignore_index: unlabelled pixels of ``high_res_target``.
        include_background: False drops channel 0 from the sum over classes (default True: the paper sums
            over every l).
        singleton_groups: "intra" (default) or "skip", see above; only used by ``inter``.
        reduction: "mean" (default), "sum" or "none" ((N,) per block for ``intra``, per group for the group
            formulations, groups ordered by sorted z / group id; not allowed with the high-res term active).

    Example::

        loss = LabelSuperResolutionLoss("label_stats.json", formulation="intra_inter", alpha=0.8)
        value = loss(logits, batch["z"])  # logits (B, L, H, W), z (B,)
    """

    def __init__(
        self,
        label_stats: LabelStatsTable | str | os.PathLike | Sequence[torch.Tensor],
        formulation: LSRFormulation | str = LSRFormulation.INTRA_INTER,
        distance: LSRDistance | str = LSRDistance.CROSS_ENTROPY,
        variance: LSRVariance | str = LSRVariance.PER_PIXEL,
        alpha: float = 1.0,
        rho_floor: float = 0.0,
        eps: float = 1e-4,
        softmax: bool = True,
        high_res_weight: float = 0.0,
        ignore_index: int = 255,
        include_background: bool = True,
        singleton_groups: SingletonGroups | str = SingletonGroups.INTRA,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.formulation = look_up_option(formulation, LSRFormulation)
        self.distance = look_up_option(distance, LSRDistance)
        self.variance = look_up_option(variance, LSRVariance)
        self.singleton_groups = look_up_option(singleton_groups, SingletonGroups)
        for name, value in (
            ("alpha", alpha),
            ("rho_floor", rho_floor),
            ("eps", eps),
            ("high_res_weight", high_res_weight),
        ):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"{name} = {value!r}: expected a finite number >= 0")
        self.alpha = float(alpha)
        self.rho_floor = float(rho_floor)
        self.eps = float(eps)
        self.softmax = bool(softmax)
        self.high_res_weight = float(high_res_weight)
        self.ignore_index = int(ignore_index)
        self.include_background = bool(include_background)
        self.label_stats = _as_table(label_stats)
        eta, rho = self.label_stats.to_tensors()
        self.register_buffer("eta", eta)
        self.register_buffer("rho", rho)
        self.register_buffer("z_values", self.label_stats.z_tensor())

    @property
    def num_classes(self) -> int:
        """L, the number of classes the table (and the network output) has."""
        return int(self.eta.shape[1])

    def _check_inputs(
        self, input: torch.Tensor, target_z: torch.Tensor, high_res_target: torch.Tensor | None
    ) -> tuple[torch.Tensor, bool]:
        """``(target_z, hr_active)``: the (B,) long low-resolution labels, and whether the high-res term applies."""
        if input.ndim < 3:
            raise ValueError(f"input has shape {tuple(input.shape)}, expected (B, L, H, W) or (B, L, *spatial)")
        if input.shape[1] != self.num_classes:
            raise ValueError(
                f"input has {input.shape[1]} channels, expected L = {self.num_classes} "
                f"(the classes of the label-statistics table: {list(self.label_stats.classes)})"
            )
        target_z = torch.as_tensor(target_z, device=input.device)
        if target_z.ndim == 2 and target_z.shape[1] == 1:
            target_z = target_z[:, 0]
        if target_z.shape != input.shape[:1]:
            raise ValueError(f"target_z has shape {tuple(target_z.shape)}, expected (B,) = ({input.shape[0]},)")
        if target_z.dtype.is_floating_point and not bool((target_z == target_z.round()).all()):
            raise ValueError(f"target_z = {target_z.tolist()}: expected integer low-resolution labels")
        hr_active = self.high_res_weight > 0 and high_res_target is not None
        if hr_active and self.reduction == LossReduction.NONE.value:
            raise ValueError(
                "reduction='none' returns one LSR value per block / group and cannot hold the pixel-level "
                "high-resolution term; use reduction 'mean' or 'sum', or high_res_weight=0"
            )
        return target_z.to(torch.long), hr_active

    def forward(
        self,
        input: torch.Tensor,
        target_z: torch.Tensor | Mapping[str, torch.Tensor],
        high_res_target: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: (B, L, H, W) (or (B, L, *spatial)) logits, or probabilities when ``softmax=False``.
            target_z: (B,) (or (B, 1)) integer low-resolution labels, each a z of the table; or
                ``{"z": labels, "high_res": pixel targets}`` (what :class:`HighResPrepareBatch` gives the trainer).
            high_res_target: optional (B, H, W) or (B, 1, H, W) integer label maps, ``ignore_index`` where
                unlabelled; used when ``high_res_weight > 0``.
            group_ids: optional (B,) integer group ids overriding the grouping by z (group formulations only;
                every group must hold a single z).

        Returns:
            a 0-dim tensor (``mean`` / ``sum``) or (N,) per block / group (``none``).

        Raises:
            ValueError: wrong shapes, L different from the table's, a z not in the table, a group mixing z.
        """
        if isinstance(target_z, Mapping):  # HighResPrepareBatch: {"z": (B,), "high_res": (B, 1, H, W)}
            target_z, high_res_target = target_z["z"], target_z.get("high_res", high_res_target)
        target_z, hr_active = self._check_inputs(input, target_z, high_res_target)
        rows = z_to_row_index(target_z, self.z_values, table_name=self.label_stats.display_name)
        probs = torch.softmax(input, dim=1) if self.softmax else input
        if probs.dtype in (torch.float16, torch.bfloat16):
            probs = probs.float()
        eta = self.eta.to(probs.dtype)
        tau = effective_target_std(self.rho.to(probs.dtype), self.alpha, self.rho_floor)

        mu, var = block_statistics(probs, self.variance)
        if self.formulation == LSRFormulation.INTRA:
            unit_rows = rows
        else:
            group_index, num_groups = group_index_from_labels(target_z, group_ids)
            mu_g, var_g, counts = group_statistics(mu, var, group_index, num_groups, self.formulation)
            unit_rows = torch.zeros(num_groups, dtype=torch.long, device=rows.device).scatter(0, group_index, rows)
            single = counts == 1
            if self.formulation == LSRFormulation.INTER and bool(single.any()):
                warnings.warn(
                    "LabelSuperResolutionLoss(formulation='inter'): a group of a single block has no "
                    f"between-block variance; singleton_groups='{self.singleton_groups}' applies (build "
                    "groups of several blocks sharing z with GroupedBatchSampler)",
                    stacklevel=2,
                )
                if self.singleton_groups == SingletonGroups.INTRA:
                    # summed σ²_k of each group: the block's own σ²_k for a group of one
                    own_var = var.new_zeros(var_g.shape).index_add(0, group_index, var)
                    var_g = torch.where(single[:, None], own_var, var_g)
                else:
                    keep = ~single
                    mu_g, var_g, unit_rows = mu_g[keep], var_g[keep], unit_rows[keep]
            mu, var = mu_g, var_g

        d = lsr_distance(mu, var, eta[unit_rows], tau[unit_rows], self.distance, self.eps)
        if not self.include_background:
            d = d[:, 1:]
        per_unit = d.sum(dim=1)
        return self._add_high_res(per_unit, input, high_res_target, hr_active)

    def _add_high_res(
        self,
        per_unit: torch.Tensor,
        input: torch.Tensor,
        high_res_target: torch.Tensor | None,
        hr_active: bool,
    ) -> torch.Tensor:
        """Reduce the per-unit LSR terms and add the weighted high-resolution term."""
        if self.reduction == LossReduction.NONE.value:
            return per_unit
        if self.reduction == LossReduction.SUM.value or per_unit.numel() == 0:  # every group skipped: 0
            loss = per_unit.sum()
        else:
            loss = per_unit.mean()
        if hr_active:
            total, count = high_res_cross_entropy(input, high_res_target, self.softmax, self.ignore_index)
            if self.reduction == LossReduction.MEAN.value:
                total = total / count.clamp(min=1)
            loss = loss + self.high_res_weight * total
        return loss
