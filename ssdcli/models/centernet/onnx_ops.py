"""TorchScript-exporter symbolic for ``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (opset >= 19).

torchvision registers no ONNX symbolic for its deformable convolution, so the ``extra["deform"]`` CenterNet variant
could not be exported with ``torch.onnx.export(dynamo=False)``. ONNX ``DeformConv`` has the same inputs and offset
layout (X, W, offset, B, mask); ONNX Runtime implements it. Registered once, at import of :mod:`ssdcli.models.centernet`.
"""

from __future__ import annotations

import torch

MIN_OPSET = 19
_registered = False


def _deform_conv2d(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups, use_mask):  # type: ignore[no-untyped-def]  # noqa: E501
    from torch.onnx import symbolic_helper

    if g.opset < MIN_OPSET:
        raise torch.onnx.errors.OnnxExporterError(
            f"DeformConv2d (extra deform=True) needs opset {MIN_OPSET} or newer (ONNX DeformConv), got {g.opset}"
        )
    ints = [symbolic_helper._maybe_get_const(v, "i") for v in (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)]
    sh, sw, ph, pw, dh, dw = (int(v) for v in ints)
    groups_i = int(symbolic_helper._maybe_get_const(groups, "i"))
    offset_groups_i = int(symbolic_helper._maybe_get_const(offset_groups, "i"))
    with_mask = bool(symbolic_helper._maybe_get_const(use_mask, "b"))
    inputs = [input, weight, offset, bias] + ([mask] if with_mask else [])
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=[dh, dw],
        strides_i=[sh, sw],
        pads_i=[ph, pw, ph, pw],
        group_i=groups_i,
        offset_group_i=offset_groups_i,
    )


def register_deform_conv_symbolic() -> None:
    """Idempotent registration for every opset the TorchScript exporter supports (errors below opset 19)."""
    global _registered
    if not _registered:
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d, 9)
        _registered = True
