"""Checkpoint (or a foreign generator) -> ONNX / TensorRT / Triton, every variant checked against PyTorch."""
from .graph import ExportResult
from .parity import OutputParity, compare
from .pipeline import ExportOptions, export, export_onnx, export_precisions

__all__ = ["ExportOptions", "ExportResult", "OutputParity", "compare", "export", "export_onnx", "export_precisions"]
