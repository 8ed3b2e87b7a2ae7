"""Running a network for prediction and serving: one interface over every backend (a float
NCHW batch in, float32 logits out, with ``backend``, ``precision`` and ``path``).

``engine``    vggnet's PyTorch engine: batch norm folded, weights cast once, the fused CPU
              program of ``fused`` (prepacked weights, ReLUs fused, pooling without indices)
``onnx``      ONNX Runtime, fp32 or int8
``openvino``  OpenVINO, fp32, bf16 or int8
``pt2``       torch.export's ExportedProgram and AOTInductor packages
``backends``  the choice of backend (``auto``), and opening one for a checkpoint
``names``     the backends' names, for the command line (imports nothing heavy)

Writing the files these run is :mod:`vggnet.export`'s work.
"""
