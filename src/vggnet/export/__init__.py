"""Deployment: batch-norm folding, ONNX and TorchScript export, int8 quantization."""
