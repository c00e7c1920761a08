"""Export to ONNX with an onnxruntime parity check."""

from slimkit.export.onnx import ExportResult, export_onnx, onnx_optimized, onnx_session

__all__ = ["ExportResult", "export_onnx", "onnx_optimized", "onnx_session"]
