"""onnxruntime's side of `zfnet-bench engine`: the identical network, exported to ONNX.

Reads model.safetensors (weights + architecture JSON) and io.safetensors (input, our logits)
from the folder given, builds the ONNX graph layer by layer, checks that onnxruntime's logits
match ours, and times inference. Prints JSON.
"""
import json
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from blas_kernels import sees_avx512


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    metadata = header.pop("__metadata__", {})
    body = data[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=np.float32).reshape(info["shape"])
    return tensors, metadata


def build(tensors, architecture, batch):
    nodes, initializers = [], []
    current = "input"
    flattened = False
    for index, layer in enumerate(architecture["layers"]):
        out = f"t{index}"
        if layer == "Relu":
            nodes.append(helper.make_node("Relu", [current], [out]))
        elif layer == "Lrn":
            # ONNX divides alpha by the window size; zfnet (Krizhevsky's formula) does not.
            nodes.append(helper.make_node("LRN", [current], [out], size=5, alpha=1e-4 * 5, beta=0.75, bias=2.0))
        elif "Conv" in layer:
            spec = layer["Conv"]
            w, b = spec["name"] + ".weight", spec["name"] + ".bias"
            initializers += [numpy_helper.from_array(tensors[w], w), numpy_helper.from_array(tensors[b], b)]
            p, s, k = spec["pad"], spec["stride"], spec["kernel"]
            nodes.append(helper.make_node("Conv", [current, w, b], [out], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p]))
        elif "MaxPool" in layer:
            spec = layer["MaxPool"]
            nodes.append(helper.make_node("MaxPool", [current], [out], kernel_shape=[spec["size"]] * 2, strides=[spec["stride"]] * 2, ceil_mode=1))
        elif "Dropout" in layer:
            continue  # inference
        elif "Linear" in layer:
            spec = layer["Linear"]
            if not flattened:
                nodes.append(helper.make_node("Flatten", [current], [out + "_flat"], axis=1))
                current, flattened = out + "_flat", True
            w, b = spec["name"] + ".weight", spec["name"] + ".bias"
            initializers += [numpy_helper.from_array(tensors[w], w), numpy_helper.from_array(tensors[b], b)]
            nodes.append(helper.make_node("Gemm", [current, w, b], [out], transB=1))
        else:
            raise ValueError(f"unknown layer {layer}")
        current = out
    size = architecture["input_size"]
    graph = helper.make_graph(
        nodes,
        "zfnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [batch, architecture["classes"]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def main():
    folder, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tensors, metadata = read_safetensors(f"{folder}/model.safetensors")
    io, _ = read_safetensors(f"{folder}/io.safetensors")
    architecture = json.loads(metadata["zfnet.architecture"])
    x, ours = io["input"], io["logits"]
    model = build(tensors, architecture, x.shape[0])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"input": x})
    diff = float(np.max(np.abs(theirs - ours)))
    session.run(None, {"input": x})
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    print(json.dumps({"onnxruntime": ort.__version__, "inference_ms": 1e3 * min(times), "max_abs_diff": diff,
                      "max_abs_logit": float(np.max(np.abs(ours))), "sees_avx512": sees_avx512()}))


if __name__ == "__main__":
    main()
