"""Static Edge TPU compatibility checks of a TFLite flatbuffer: :func:`edgetpu_report`.

Google's Edge TPU compiler (``edgetpu_compiler``) only maps a model to the
accelerator when it is fully 8-bit quantised, has static shapes and uses the
operators of its documented list ("TensorFlow models on the Edge TPU",
coral.ai/docs/edgetpu/models-intro). The compiler is distributed only for
Debian-family x86-64/ARM hosts and is often not installable (it is not on the
AstrID development machines), so this module reads the ``.tflite`` file with
the ``tflite`` flatbuffer schema package and checks those requirements
itself. When ``edgetpu_compiler`` *is* on ``PATH`` it is run as well and its
log kept in the report.

The checks follow the documented requirements:

* every tensor is int8 or uint8; int32 is allowed for constant tensors
  (biases, shape operands), as the compiler allows;
* tensor sizes are constant at compile time: no ``-1`` in a shape signature;
* tensors of more than three dimensions have size 1 outside the three
  innermost ones (so the batch is 1);
* every operator is in the supported list; QUANTIZE and DEQUANTIZE only at
  the ends of the graph (they convert float model inputs/outputs);
* the documented per-operator limitations that can be read from the file
  (no fused activation on pooling and concatenation, unit strides of
  STRIDED_SLICE, 1-D SOFTMAX of at most 16,000 elements).

The compiler maps operators to the Edge TPU in graph order up to the first
unsupported one; that one and everything after it run on the CPU. The report
lists where that split would fall.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import AstridFileError

__all__ = [
    "EDGETPU_OPS",
    "EdgeTPUReport",
    "OpInfo",
    "TensorInfo",
    "edgetpu_report",
    "read_io_details",
]

#: TFLite builtin operators that the Edge TPU compiler maps to the Edge TPU
#: (coral.ai, "TensorFlow models on the Edge TPU", supported operations table).
#: RELU/RELU6 appear both as operators and as fused activations.
EDGETPU_OPS: frozenset[str] = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

_COMPILER = "edgetpu_compiler"
_NO_COMPILER = (
    "edgetpu_compiler not found; it is not installable here; the int8 model is still "
    "written and {verdict} these static checks"
)


@dataclass
class TensorInfo:
    """Name, shape, type and quantisation of one model input or output.

    Attributes
    ----------
    name : str
        Tensor name in the flatbuffer.
    shape : list of int
        Shape as allocated (a dynamic dimension shows as 1).
    shape_signature : list of int
        Shape with ``-1`` for dynamic dimensions (equal to ``shape`` when static).
    dtype : str
        numpy name of the element type (``"int8"``, ``"uint8"``, ``"float32"``, ...).
    scale : float
        Quantisation scale, ``real = scale * (q - zero_point)``; ``0.0`` for a
        float tensor.
    zero_point : int
        Quantisation zero point; ``0`` for a float tensor.
    """

    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        """True when the tensor holds quantised integers (scale > 0)."""
        return self.scale > 0.0

    @property
    def dynamic_batch(self) -> bool:
        """True when the first dimension is dynamic (``-1`` in the signature)."""
        return bool(self.shape_signature) and self.shape_signature[0] == -1


@dataclass
class OpInfo:
    """One operator of the graph and where the Edge TPU compiler would run it.

    Attributes
    ----------
    index : int
        Position in execution order.
    name : str
        TFLite builtin operator name (``"CONV_2D"``, ...), or ``"CUSTOM:<code>"``.
    device : str
        ``"edgetpu"`` or ``"cpu"``.
    reason : str
        Why the operator is not mapped (empty when it is, or when it only runs
        on the CPU because an earlier operator was unsupported).
    """

    index: int
    name: str
    device: str
    reason: str = ""


@dataclass
class EdgeTPUReport:
    """Result of :func:`edgetpu_report`.

    Attributes
    ----------
    path : str
        The checked ``.tflite`` file.
    passed : bool
        True when every static check passes, and the compiler (when it could be
        run) succeeded and mapped every operator.
    problems : list of str
        What stops a full Edge TPU mapping, one readable line each.
    ops : list of OpInfo
        Operators in execution order with the device they would run on.
    inputs : list of TensorInfo
        Model inputs with their quantisation.
    outputs : list of TensorInfo
        Model outputs with their quantisation.
    tensor_types : dict
        Number of tensors of each element type, e.g. ``{"int8": 21, "int32": 5}``.
    compiler_available : bool
        Whether ``edgetpu_compiler`` was found on ``PATH``.
    compiler_log : str
        The compiler's output, or a plain statement that it is not available.
    notes : list of str
        Facts worth knowing that are not problems (float ends converted on the CPU).
    """

    path: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    ops: list[OpInfo] = field(default_factory=list)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    tensor_types: dict[str, int] = field(default_factory=dict)
    compiler_available: bool = False
    compiler_log: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_ops(self) -> list[OpInfo]:
        """Operators that would fall back to the CPU."""
        return [op for op in self.ops if op.device == "cpu"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of the whole report."""
        out = asdict(self)
        out["cpu_ops"] = [op.name for op in self.cpu_ops]
        return out

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        n_tpu = len(self.ops) - len(self.cpu_ops)
        lines = [
            f"Edge TPU static check of {self.path}: {verdict}",
            f"  operators: {len(self.ops)} ({n_tpu} on the Edge TPU, {len(self.cpu_ops)} on the CPU)",
            "  graph: "
            + " -> ".join(op.name + ("" if op.device == "edgetpu" else "[cpu]") for op in self.ops),
            "  tensor types: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.tensor_types.items())),
        ]
        for label, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                quant = f", scale={t.scale:.6g}, zero_point={t.zero_point}" if t.quantized else ""
                lines.append(f"  {label} {t.name!r}: {t.dtype} {t.shape_signature}{quant}")
        if self.problems:
            lines.append("  problems:")
            lines.extend(f"    - {p}" for p in self.problems)
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.compiler_available:
            lines.append("  compiler log:")
            lines.extend("    " + line for line in self.compiler_log.splitlines())
        else:
            lines.append(f"  compiler: {self.compiler_log}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- #
# flatbuffer reading
# --------------------------------------------------------------------------- #


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_NUMPY_OF_TFLITE = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "FLOAT64": "float64",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "INT32": "int32",
    "UINT32": "uint32",
    "INT64": "int64",
    "UINT64": "uint64",
    "BOOL": "bool",
}


class _Flatbuffer:
    """Thin reader over a ``.tflite`` flatbuffer (first subgraph)."""

    def __init__(self, data: bytes, name: str):
        tflite = require("tflite", "Reading a .tflite model")
        self.tflite = tflite
        self.name = name
        if len(data) < 8 or not tflite.Model.ModelBufferHasIdentifier(data, 0):
            raise AstridFileError(
                f"{name}: not a TFLite flatbuffer (no 'TFL3' identifier; "
                f"{len(data)} bytes): the file is corrupt or not a .tflite model"
            )
        try:
            self.model = tflite.Model.GetRootAs(data, 0)
            if self.model.SubgraphsLength() < 1:
                raise AstridFileError(f"{name}: TFLite model has no subgraph")
            self.subgraph = self.model.Subgraphs(0)
            self._op_names = _enum_names(tflite.BuiltinOperator)
            self._type_names = _enum_names(tflite.TensorType)
            self.codes = [
                self.model.OperatorCodes(i) for i in range(self.model.OperatorCodesLength())
            ]
            self.n_tensors = self.subgraph.TensorsLength()
            self.n_ops = self.subgraph.OperatorsLength()
        except AstridFileError:
            raise
        except Exception as exc:  # flatbuffers raises assorted errors on truncated data
            raise AstridFileError(f"{name}: cannot parse the TFLite flatbuffer ({exc})") from exc

    # tensors -------------------------------------------------------------
    def tensor(self, i: int):
        return self.subgraph.Tensors(i)

    def tensor_type(self, i: int) -> str:
        code = self._type_names.get(self.tensor(i).Type(), f"TYPE{self.tensor(i).Type()}")
        return _NUMPY_OF_TFLITE.get(code, code.lower())

    def is_constant(self, i: int) -> bool:
        buf_index = self.tensor(i).Buffer()
        if buf_index <= 0 or buf_index >= self.model.BuffersLength():
            return False
        buf = self.model.Buffers(buf_index)
        return buf.DataLength() > 0 or buf.Size() > 0

    def constant(self, i: int) -> np.ndarray | None:
        if not self.is_constant(i):
            return None
        buf = self.model.Buffers(self.tensor(i).Buffer())
        if buf.DataLength() == 0:
            return None  # stored outside the flatbuffer (models > 2 GB)
        raw = buf.DataAsNumpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(self.tensor_type(i))).reshape(self.shape(i))

    def shape(self, i: int) -> list[int]:
        t = self.tensor(i)
        return [] if t.ShapeIsNone() else [int(v) for v in t.ShapeAsNumpy()]

    def shape_signature(self, i: int) -> list[int]:
        t = self.tensor(i)
        if t.ShapeSignatureIsNone() or t.ShapeSignatureLength() == 0:
            return self.shape(i)
        return [int(v) for v in t.ShapeSignatureAsNumpy()]

    def quantization(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.tensor(i).Quantization()
        if q is None or q.ScaleIsNone() or q.ScaleLength() == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return q.ScaleAsNumpy(), q.ZeroPointAsNumpy() if not q.ZeroPointIsNone() else np.zeros(
            0, np.int64
        )

    def tensor_name(self, i: int) -> str:
        name = self.tensor(i).Name()
        return name.decode("utf-8", "replace") if name else f"tensor{i}"

    def tensor_info(self, i: int) -> TensorInfo:
        scale, zero = self.quantization(i)
        return TensorInfo(
            name=self.tensor_name(i),
            shape=self.shape(i),
            shape_signature=self.shape_signature(i),
            dtype=self.tensor_type(i),
            scale=float(scale[0]) if scale.size else 0.0,
            zero_point=int(zero[0]) if zero.size else 0,
        )

    def inputs(self) -> list[int]:
        return (
            [int(v) for v in self.subgraph.InputsAsNumpy()] if self.subgraph.InputsLength() else []
        )

    def outputs(self) -> list[int]:
        return (
            [int(v) for v in self.subgraph.OutputsAsNumpy()]
            if self.subgraph.OutputsLength()
            else []
        )

    # operators -----------------------------------------------------------
    def op(self, j: int):
        return self.subgraph.Operators(j)

    def op_name(self, j: int) -> str:
        code = self.codes[self.op(j).OpcodeIndex()]
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = self._op_names.get(builtin, f"BUILTIN{builtin}")
        if name == "CUSTOM":
            custom = code.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        return name

    def op_inputs(self, j: int) -> list[int]:
        op = self.op(j)
        return [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []

    def op_outputs(self, j: int) -> list[int]:
        op = self.op(j)
        return [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []

    def fused_activation(self, j: int, options_cls_name: str) -> str:
        table = self.op(j).BuiltinOptions()
        if table is None:
            return "NONE"
        options = getattr(self.tflite, options_cls_name)()
        options.Init(table.Bytes, table.Pos)
        return _enum_names(self.tflite.ActivationFunctionType).get(
            options.FusedActivationFunction(), "?"
        )


def _read(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.exists():
        raise AstridFileError(f"{path}: no such TFLite model file")
    if path.is_dir():
        raise AstridFileError(f"{path}: is a folder, not a TFLite model file")
    if not path.is_file():
        raise AstridFileError(f"{path}: is not a file")
    return path, path.read_bytes()


def read_io_details(
    model: str | Path | bytes, name: str | None = None
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a TFLite model, with their quantisation.

    Parameters
    ----------
    model : path or bytes
        A ``.tflite`` file or its content.
    name : str, optional
        Name used in error messages when ``model`` is bytes.

    Returns
    -------
    inputs : list of TensorInfo
        The model's input tensors, in the model's order.
    outputs : list of TensorInfo
        The model's output tensors, in the model's order.

    Raises
    ------
    AstridFileError
        Missing file, or content that is not a TFLite flatbuffer.
    """
    if isinstance(model, (bytes, bytearray)):
        fb = _Flatbuffer(bytes(model), name or "TFLite model")
    else:
        path, data = _read(model)
        fb = _Flatbuffer(data, str(path))
    with _corrupt_as_file_error(fb.name):
        return [fb.tensor_info(i) for i in fb.inputs()], [fb.tensor_info(i) for i in fb.outputs()]


@contextmanager
def _corrupt_as_file_error(name: str):
    """Turn the assorted errors of reading a damaged flatbuffer into AstridFileError."""
    try:
        yield
    except AstridFileError:
        raise
    except Exception as exc:
        raise AstridFileError(
            f"{name}: damaged TFLite flatbuffer ({type(exc).__name__}: {exc})"
        ) from exc


# --------------------------------------------------------------------------- #
# checks
# --------------------------------------------------------------------------- #

_INT8_TYPES = ("int8", "uint8")
_POOL_OPTIONS = {
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions",
}


def _op_limitation(fb: _Flatbuffer, j: int, name: str) -> str:
    """Reason a supported operator still cannot be mapped, or ''."""
    if name in _POOL_OPTIONS:
        act = fb.fused_activation(j, _POOL_OPTIONS[name])
        if act not in ("NONE", "?"):
            return f"{name} with a fused {act} activation (the Edge TPU allows none)"
    if name == "STRIDED_SLICE":
        ins = fb.op_inputs(j)
        strides = fb.constant(ins[3]) if len(ins) > 3 and ins[3] >= 0 else None
        if strides is None:
            return "STRIDED_SLICE with strides computed at run time (must be constant 1)"
        if np.any(strides != 1):
            return f"STRIDED_SLICE with strides {strides.tolist()} (the Edge TPU needs all 1)"
    if name == "SOFTMAX":
        ins = fb.op_inputs(j)
        if ins:
            shape = [s for s in fb.shape(ins[0]) if s != 1]
            if len(shape) > 1 or (shape and shape[0] > 16000):
                return f"SOFTMAX over shape {fb.shape(ins[0])} (the Edge TPU needs a 1-D input of <= 16,000)"
    return ""


def _static_checks(fb: _Flatbuffer) -> tuple[list[OpInfo], list[str], list[str], dict[str, int]]:
    problems: list[str] = []
    notes: list[str] = []
    graph_inputs, graph_outputs = set(fb.inputs()), set(fb.outputs())

    if fb.model.SubgraphsLength() > 1:
        problems.append(
            f"{fb.model.SubgraphsLength()} subgraphs (control flow); the Edge TPU compiles only a "
            "single feed-forward graph"
        )

    # Tensors produced by a leading QUANTIZE / consumed by a trailing DEQUANTIZE may be float.
    float_ok: set[int] = set()
    ops: list[OpInfo] = []
    first_unsupported: int | None = None
    for j in range(fb.n_ops):
        name = fb.op_name(j)
        ins, outs = fb.op_inputs(j), fb.op_outputs(j)
        reason = ""
        if name == "QUANTIZE" and any(i in graph_inputs for i in ins):
            float_ok.update(i for i in ins if i in graph_inputs)
            notes.append(
                f"float input {fb.tensor_name(ins[0])!r} is quantised by a QUANTIZE at the start "
                "(the caller may feed float32)"
            )
        elif name == "DEQUANTIZE":
            if all(o in graph_outputs for o in outs):
                float_ok.update(outs)
                notes.append(
                    f"output {fb.tensor_name(outs[0])!r} is dequantised to float by a final "
                    "DEQUANTIZE, which runs on the CPU"
                )
                # A trailing DEQUANTIZE runs on the CPU but does not split the graph.
                ops.append(OpInfo(j, name, "cpu"))
                continue
            reason = "DEQUANTIZE inside the graph (allowed only on the model outputs)"
        elif name.startswith("CUSTOM:edgetpu"):
            reason = "already compiled for the Edge TPU (edgetpu-custom-op)"
        elif name not in EDGETPU_OPS:
            reason = f"{name} is not an Edge TPU operator"
        else:
            reason = _op_limitation(fb, j, name)
        if reason and first_unsupported is None:
            first_unsupported = j
        device = "cpu" if first_unsupported is not None else "edgetpu"
        ops.append(OpInfo(j, name, device, reason))

    if first_unsupported is not None:
        for op in ops:
            if op.reason:
                problems.append(f"operator #{op.index} {op.name}: {op.reason}")
        n_cpu = sum(1 for op in ops if op.index >= first_unsupported)
        problems.append(
            f"the compiler would map operators #{first_unsupported}-#{fb.n_ops - 1} "
            f"({n_cpu} of {fb.n_ops}) to the CPU, starting at {ops[first_unsupported].name}"
        )

    tensor_types: dict[str, int] = {}
    bad_type: list[str] = []
    dynamic: list[str] = []
    big_rank: list[str] = []
    for i in range(fb.n_tensors):
        dtype = fb.tensor_type(i)
        tensor_types[dtype] = tensor_types.get(dtype, 0) + 1
        if dtype in _INT8_TYPES:
            pass
        elif dtype == "int32" and fb.is_constant(i):
            pass  # biases and shape operands are int32 constants, which the compiler accepts
        elif i in float_ok:
            pass
        else:
            kind = "constant" if fb.is_constant(i) else "computed"
            bad_type.append(f"{fb.tensor_name(i)!r} ({dtype}, {kind})")
        signature = fb.shape_signature(i)
        if any(s < 0 for s in signature):
            dynamic.append(f"{fb.tensor_name(i)!r} {signature}")
        # Weights are exempt: conv filters are 4-D constants by construction.
        if len(signature) > 3 and any(s > 1 for s in signature[:-3]) and not fb.is_constant(i):
            big_rank.append(f"{fb.tensor_name(i)!r} {signature}")
    if bad_type:
        problems.append(
            f"{len(bad_type)} tensor(s) not int8/uint8 (nor int32 constants): "
            + ", ".join(bad_type[:6])
            + (" ..." if len(bad_type) > 6 else "")
        )
    if dynamic:
        problems.append(
            f"{len(dynamic)} tensor(s) with a dynamic size (-1 in the shape signature; the Edge TPU "
            "needs static shapes, export with batch_size=1): "
            + ", ".join(dynamic[:4])
            + (" ..." if len(dynamic) > 4 else "")
        )
    if big_rank:
        problems.append(
            f"{len(big_rank)} tensor(s) of more than 3 dimensions with a size other than 1 outside "
            "the 3 innermost (batch must be 1): "
            + ", ".join(big_rank[:4])
            + (" ..." if len(big_rank) > 4 else "")
        )
    for i in graph_inputs:
        sig = fb.shape_signature(i)
        if sig and sig[0] != 1 and not any(s < 0 for s in sig):
            problems.append(
                f"input {fb.tensor_name(i)!r} has batch {sig[0]}; the Edge TPU needs batch 1"
            )
    return ops, problems, notes, tensor_types


def _run_compiler(path: Path, timeout: float = 300.0) -> tuple[bool, str]:
    """Run edgetpu_compiler into a scratch folder; (success, log)."""
    with tempfile.TemporaryDirectory(prefix="astrid-edgetpu-") as out:
        try:
            proc = subprocess.run(
                [_COMPILER, "--show_operations", "--out_dir", out, str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{_COMPILER} could not be run: {exc}"
        log = (proc.stdout or "") + (proc.stderr or "")
        # The compiler exits 0 even when it maps only part of the graph; its
        # summary line counts the operators left to the CPU.
        cpu = re.search(r"operations that will run on CPU:\s*(\d+)", log)
        ok = proc.returncode == 0 and (cpu is None or int(cpu.group(1)) == 0)
        return ok, log


def edgetpu_report(path: str | Path, run_compiler: bool = True) -> EdgeTPUReport:
    """Check whether a ``.tflite`` model can be compiled for the Edge TPU.

    Parameters
    ----------
    path : str or path-like
        The TFLite model (as written by :func:`astrid.export.to_tflite`).
    run_compiler : bool, optional
        Run ``edgetpu_compiler`` when it is on ``PATH`` (default True). It
        is not installable on most machines; the report then says so and
        relies on the static checks.

    Returns
    -------
    EdgeTPUReport
        ``passed``, ``problems``, ``ops`` (with the device each would run
        on), input/output quantisation and the compiler log. ``print(report)``
        gives a readable summary; ``report.to_dict()`` a JSON-ready one.

    Raises
    ------
    AstridFileError
        The file is missing or is not a TFLite flatbuffer.

    Notes
    -----
    The static checks encode the requirements that coral.ai documents for
    the Edge TPU compiler; passing them is necessary, not a guarantee that
    a particular compiler version maps every operator (it may still refuse
    an operator for precision reasons, e.g. some resize sizes).
    """
    path, data = _read(path)
    fb = _Flatbuffer(data, str(path))
    with _corrupt_as_file_error(str(path)):
        ops, problems, notes, tensor_types = _static_checks(fb)
        inputs = [fb.tensor_info(i) for i in fb.inputs()]
        outputs = [fb.tensor_info(i) for i in fb.outputs()]
    static_ok = not problems

    compiler_available = shutil.which(_COMPILER) is not None
    if compiler_available and run_compiler:
        compiled, log = _run_compiler(path)
        if not compiled:
            problems.append(f"{_COMPILER} did not map the whole model (see compiler_log)")
    else:
        compiled = True
        log = (
            _NO_COMPILER.format(verdict="passes" if static_ok else "fails")
            if not compiler_available
            else f"{_COMPILER} found but not run (run_compiler=False)"
        )
    return EdgeTPUReport(
        path=str(path),
        passed=static_ok and compiled,
        problems=problems,
        ops=ops,
        inputs=inputs,
        outputs=outputs,
        tensor_types=tensor_types,
        compiler_available=compiler_available,
        compiler_log=log,
        notes=notes,
    )
