"""Detector families behind one interface (:mod:`.base`) and one registry (:mod:`.registry`).

Importing this package registers the built-in families, each from its own folder: :mod:`.ssd` and
:mod:`.centernet`.
"""

import ssdcli.models.centernet  # noqa: E402,F401  (registers centernet-res18/res50)
import ssdcli.models.ssd  # noqa: E402,F401  (registers ssd300, ssd300-bn, ssd512, ssd512-bn, ssdlite320, ssd-mini)
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.registry import architecture, available_models, build_from_config, build_model, register

__all__ = [
    "DetectorModel",
    "ModelConfig",
    "architecture",
    "available_models",
    "build_model",
    "build_from_config",
    "register",
]
