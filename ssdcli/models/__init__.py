from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.registry import available_models, build_from_config, build_model, register

__all__ = ["DetectorModel", "ModelConfig", "available_models", "build_model", "build_from_config", "register"]
