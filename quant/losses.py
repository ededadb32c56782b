"""CenterNet's training losses: focal loss on the heat-map, L1 on sizes and offsets.

The targets come from `codenet.quant.targets.encode_targets` (sizes in output-grid units),
the predictions from `codenet.quant.models.CoDeNet` (heat-map as logits).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["focal_loss", "gathered_l1", "centernet_loss", "LOSS_WEIGHTS"]

#: CenterNet's weighting of the three heads.
LOSS_WEIGHTS = {"hm": 1.0, "wh": 0.1, "reg": 1.0}


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The penalty-reduced pixel-wise focal loss of CornerNet/CenterNet (alpha 2, beta 4).

    Computed from logits with log-sigmoid, so saturated logits give finite losses.
    """
    pos = target.eq(1).to(logits.dtype)
    neg = 1.0 - pos
    log_p = torch.nn.functional.logsigmoid(logits)
    log_1mp = torch.nn.functional.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = log_p * (1 - p) ** 2 * pos
    neg_loss = log_1mp * p**2 * (1 - target) ** 4 * neg
    num_pos = pos.sum()
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos.clamp(min=1.0)


def gathered_l1(pred: Tensor, ind: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    """L1 between `pred` (N,2,H,W) read at the object cells `ind` (N,K) and `target` (N,K,2)."""
    n, c, h, w = pred.shape
    flat = pred.view(n, c, h * w).permute(0, 2, 1)  # (N, HW, 2)
    got = flat.gather(1, ind.unsqueeze(-1).expand(-1, -1, c))  # (N, K, 2)
    m = mask.unsqueeze(-1).to(pred.dtype)
    return (torch.abs(got - target) * m).sum() / (m.sum() * c).clamp(min=1.0)


def centernet_loss(outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the three head losses, and each part as a float for logging."""
    parts = {
        "hm": focal_loss(outputs["hm"], targets["hm"]),
        "wh": gathered_l1(outputs["wh"], targets["ind"], targets["mask"], targets["wh"]),
        "reg": gathered_l1(outputs["reg"], targets["ind"], targets["mask"], targets["reg"]),
    }
    total = sum(LOSS_WEIGHTS[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
