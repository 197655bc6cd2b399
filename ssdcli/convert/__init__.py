"""Weights from elsewhere: foreign SSD checkpoints (``ssd convert``) and ImageNet backbones (``--backbone-weights``).

Every file is read with ``torch.load(weights_only=True)``: nothing in a downloaded file can run code.
"""

from ssdcli.convert.api import ConversionResult, convert_file, convert_state_dict
from ssdcli.convert.backbones import load_backbone_state, load_backbone_weights, load_pretrained_backbone

__all__ = [
    "ConversionResult",
    "convert_file",
    "convert_state_dict",
    "load_backbone_state",
    "load_backbone_weights",
    "load_pretrained_backbone",
]
