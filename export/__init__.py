"""Export: ONNX graphs, FP16 conversion, TensorRT engines and the bundles the runtime reads."""
