"""Tiny ONNX face embedders built in the tests: flatten the chip, multiply by a fixed random
matrix. Real ONNX graphs run by ONNX Runtime, small enough to build in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_embedder(path: Path, size: int = 112, dim: int = 16, seed: int = 0) -> Path:
    """y = flatten(x) @ w for x of shape (N, 3, size, size): a stand-in face embedder."""
    w = np.random.default_rng(seed).normal(size=(3 * size * size, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["y"]),
        ],
        "tiny-embedder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
