"""ssdcli: single-shot object detectors from dataset to deployment.

Stable Python API (see README "Python API")::

    build_model, make_priors, encode, decode, assign_targets, multibox_loss, postprocess,
    load_checkpoint, save_checkpoint, Detector
"""

from ssdcli.boxes import cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssdcli.checkpoint import load_checkpoint, load_model, save_checkpoint
from ssdcli.errors import SsdError
from ssdcli.inference import Detector, Prediction
from ssdcli.loss import multibox_loss
from ssdcli.matching import assign_targets
from ssdcli.models import available_models, build_model
from ssdcli.postprocess import Detections, PostprocessConfig, postprocess
from ssdcli.preprocess import Preprocess
from ssdcli.priors import PriorSpec, make_priors
from ssdcli.version import __version__

__all__ = [
    "__version__",
    "Detector",
    "Detections",
    "Prediction",
    "PostprocessConfig",
    "Preprocess",
    "PriorSpec",
    "SsdError",
    "assign_targets",
    "available_models",
    "build_model",
    "cxcywh_to_xyxy",
    "decode",
    "encode",
    "load_checkpoint",
    "load_model",
    "make_priors",
    "multibox_loss",
    "postprocess",
    "save_checkpoint",
    "xyxy_to_cxcywh",
]
