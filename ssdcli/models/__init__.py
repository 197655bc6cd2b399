from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.registry import available_models, build_from_config, build_model, register
import ssdcli.models.centernet  # noqa: E402,F401  (registers centernet-res18/res50)

__all__ = ["DetectorModel", "ModelConfig", "available_models", "build_model", "build_from_config", "register"]
