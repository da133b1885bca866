"""Checkpoint -> ONNX, with parity checked against PyTorch at every export."""
from .onnx import ExportResult, export_onnx
from .parity import OutputParity, compare

__all__ = ["ExportResult", "OutputParity", "compare", "export_onnx"]
