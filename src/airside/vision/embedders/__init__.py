"""Face embedders, beside ``vision.detectors``: dlib's ResNet (its own forward pass, or
converted to ONNX) in ``dlib_resnet``, and the ONNX models an operator registers
(ArcFace-style, SFace, generic) in ``onnx_models``. Each satisfies
``airside.vision.protocols.FaceEmbedder``; the modules are imported where needed, since
each loads its own runtime."""
