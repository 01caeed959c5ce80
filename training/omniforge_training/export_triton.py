"""Writes a Triton model repository from a text bundle:

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx        (+ model.py for the Python-backend runtime)

`runtime="onnxruntime"` uses Triton's ONNX Runtime backend (GPU nodes: KIND_GPU);
`runtime="python"` wraps the same graph in a Python-backend model that runs onnxruntime, for
tritonserver builds that only carry the Python backend.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from omniforge_shared.bundle import Bundle, load_bundle

PYTHON_MODEL = '''"""Triton Python-backend model: runs the exported decoder graph with onnxruntime."""
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            feed["lengths"] = feed["lengths"].reshape(-1)     # (B, 1) on the wire, (B,) in the graph
            results = self.session.run(None, feed)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, results)]))
        return responses
'''


def _tensor(name: str, data_type: str, dims: list[int], reshape: list[int] | None = None) -> str:
    extra = "" if reshape is None else f"\n    reshape: {{ shape: [ {', '.join(map(str, reshape))} ] }}"
    return (f'  {{\n    name: "{name}"\n    data_type: {data_type}\n    dims: [ {", ".join(map(str, dims))} ]'
            f'{extra}\n  }}')


def config_pbtxt(bundle: Bundle, *, runtime: str, kind: str, instances: int, max_batch_size: int) -> str:
    g = bundle.manifest["graph"]
    nh, hs, vocab = g["n_head"], g["head_size"], bundle.manifest["tokenizer"]["vocab_size"]
    # dims exclude the batch dimension (max_batch_size > 0); -1 = dynamic
    # lengths is one number per row: [1] on the wire, a scalar per row for the graph
    inputs = [_tensor("input_ids", "TYPE_INT64", [-1]), _tensor("lengths", "TYPE_INT32", [1], reshape=[])]
    inputs += [_tensor(n, "TYPE_FP32", [nh, -1, hs]) for n in g["inputs"][2:]]
    outputs = [_tensor(g["outputs"][0], "TYPE_FP32", [-1, vocab])]
    outputs += [_tensor(n, "TYPE_FP32", [nh, -1, hs]) for n in g["outputs"][1:]]
    backend = 'platform: "onnxruntime_onnx"' if runtime == "onnxruntime" else 'backend: "python"'
    sep = ",\n"
    return f'''name: "{bundle.name}"
{backend}
max_batch_size: {max_batch_size}
input [
{sep.join(inputs)}
]
output [
{sep.join(outputs)}
]
dynamic_batching {{
  max_queue_delay_microseconds: 500
}}
instance_group [
  {{
    count: {instances}
    kind: {kind}
  }}
]
'''


def export_triton(bundle_dir: Path, repo: Path, *, runtime: str = "onnxruntime", kind: str = "KIND_GPU",
                  instances: int = 1, max_batch_size: int = 16, version: int | None = None) -> Path:
    """Returns the model's folder in the repository. Triton versions are integers: the bundle's
    version when it is one, else `version`."""
    if runtime not in ("onnxruntime", "python"):
        raise ValueError(f"runtime={runtime!r}; use 'onnxruntime' or 'python'")
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise ValueError(f"kind={kind!r}; use KIND_GPU or KIND_CPU")
    bundle = load_bundle(bundle_dir)
    if bundle.task != "text-generation":
        raise ValueError(f"{bundle.name} is a {bundle.task!r} bundle; only text-generation exports to Triton yet")
    number = version if version is not None else (int(bundle.version) if bundle.version.isdigit() else 1)
    model_dir = Path(repo) / bundle.name
    version_dir = model_dir / str(number)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle.file("model"), version_dir / "model.onnx")
    if runtime == "python":
        (version_dir / "model.py").write_text(PYTHON_MODEL)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(bundle, runtime=runtime, kind=kind, instances=instances,
                                                         max_batch_size=max_batch_size))
    return model_dir
