"""Export stage: ONNX (+ parity), reduced precision, TensorRT engines, Triton repositories."""
