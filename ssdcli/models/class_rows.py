"""Moving a trained classifier's per-class output rows onto a model with another class list (fine-tuning).

Shared tensor arithmetic for the families' :meth:`~ssdcli.models.base.DetectorModel.transfer_class_rows`; which
tensors hold class rows, and how they are grouped, is each family's knowledge.
"""

from __future__ import annotations

import torch


def remap_rows(own: torch.Tensor, src: torch.Tensor, rows: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """A copy of ``own`` whose class rows come from ``src`` where ``rows`` says so.

    ``own`` ``[groups * C_own, ...]`` and ``src`` ``[groups * C_src, ...]`` are laid out group-major (row
    ``g * C + c``: e.g. an SSD conf head's anchors x classes per location). ``rows`` ``[C_own]`` (long): the source
    class of each own class, -1 to keep the own (fresh) row. Trailing dimensions must agree.
    """
    if own.shape[1:] != src.shape[1:] or own.shape[0] % groups or src.shape[0] % groups:
        raise ValueError(f"class rows do not line up: {tuple(own.shape)} vs {tuple(src.shape)} in {groups} groups")
    out = own.detach().clone().reshape(groups, -1, *own.shape[1:])
    if out.shape[1] != rows.shape[0]:
        raise ValueError(f"{rows.shape[0]} row indices for {out.shape[1]} classes")
    source = src.detach().reshape(groups, -1, *src.shape[1:])
    keep = (rows >= 0).nonzero().flatten()
    out[:, keep] = source[:, rows[keep]].to(out.dtype)
    return out.reshape(own.shape)
