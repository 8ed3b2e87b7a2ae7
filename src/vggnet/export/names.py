"""The names of the inference backends, apart from the backends themselves (which load
PyTorch), so that the command line can list them before anything heavy is imported."""

BACKENDS = ("auto", "torch", "onnx", "int8", "openvino", "openvino-int8")
