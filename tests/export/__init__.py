"""Tests of mobile_cv.export: TorchScript, ONNX, ExecuTorch and the runtime registry."""
