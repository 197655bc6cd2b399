"""Inference on trained models: the :class:`Detector` API over a PyTorch or an ONNX Runtime backend.

Layer: below the workflows (``engine``, ``deploy``) that use it, above ``checkpoint`` and ``models``.
"""

from ssdcli.inference.detector import Detector, InferenceBackend, Prediction, TorchBackend, detections_to_prediction
from ssdcli.inference.video import FramePrediction

__all__ = ["Detector", "FramePrediction", "InferenceBackend", "Prediction", "TorchBackend", "detections_to_prediction"]
