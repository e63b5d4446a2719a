"""Writes launcher/preflight/data/probe.onnx: Conv then MatMul, so the probe exercises both cuDNN and cuBLAS.

The weights are graph inputs, not initializers, so the probe (stdlib + numpy + onnxruntime only,
no `onnx` package) can feed them and compute the reference itself.
IR 8 / opset 13: old enough for HeyGem's pinned onnxruntime-gpu 1.16 and still read by 1.31
(the newest onnx writes IR 14 by default, which ORT 1.31 rejects).
Run: python scripts/make_probe_model.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parent.parent / "launcher" / "preflight" / "data" / "probe.onnx"


def build() -> bytes:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
        helper.make_tensor_value_info("m", TensorProto.FLOAT, [6, 5]),
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 5])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("MatMul", ["c", "m"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(nodes, "heygem_probe", inputs, [output])
    model = helper.make_model(graph, producer_name="heygem-launch", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


if __name__ == "__main__":
    OUT.write_bytes(build())
    sys.stdout.write(f"wrote {OUT}\n")
