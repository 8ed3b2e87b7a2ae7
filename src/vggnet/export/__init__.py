"""Writing deployment files: ONNX (``formats``), OpenVINO IR (``openvino``), torch.export's
``.pt2`` and AOTInductor packages (``pt2``), int8 models calibrated on real images
(``quantize``, ``openvino``), and the files a backend needs written on first use
(``on_demand``). Each file is checked against the PyTorch model by the runtime that will
run it (:mod:`vggnet.inference`). What runs them is :mod:`vggnet.inference`."""
