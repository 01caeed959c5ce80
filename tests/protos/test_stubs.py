import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto_files(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    committed = ROOT / "protos" / "python" / "omniforge_proto" / "v1"
    fresh = tmp_path / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    drifted = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert not drifted, f"stubs out of date, run `make protos`: {drifted}"


def test_stubs_import_under_the_project_package():
    from omniforge_proto.v1 import text_pb2, text_pb2_grpc

    assert text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name == "omniforge.v1.TextService"
    assert hasattr(text_pb2_grpc, "TextServiceStub")
