"""TensorRT engines from the ONNX decoder graph, on GPU workers that have TensorRT."""
from __future__ import annotations

from pathlib import Path


def build_engine(onnx_path: Path, plan_path: Path, *, max_batch: int = 16, max_seq: int = 256,
                 fp16: bool = True, log=print) -> Path:
    """Builds a serialized engine with one optimisation profile covering decode and prefill shapes."""
    import onnx
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    graph = onnx.load(str(onnx_path), load_external_data=False)
    for inp in graph.graph.input:
        name = inp.name
        if name in ("input_ids", "position_ids"):
            shapes = (1, 1), (max_batch // 2, 1), (max_batch, max_seq)
        elif name == "attention_mask":
            shapes = (1, 1), (max_batch // 2, max_seq // 2), (max_batch, max_seq)
        else:  # past_key_values.{i}.key/value: (B, nh, P, hs)
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            nh, hs = dims[1], dims[3]
            shapes = (1, nh, 0, hs), (max_batch // 2, nh, max_seq // 2, hs), (max_batch, nh, max_seq, hs)
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine")
    Path(plan_path).write_bytes(bytes(engine))
    log(f"TensorRT engine written to {plan_path} ({'fp16' if fp16 else 'fp32'}, batch <= {max_batch}, "
        f"sequence <= {max_seq})")
    return Path(plan_path)
