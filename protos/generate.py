"""Generates the Python gRPC stubs for protos/omniforge/v1/*.proto into omniforge_proto/v1.

    python protos/generate.py [--out DIR]

protoc writes imports as `from omniforge.v1 import ...`; they are rewritten to the installed
package name `omniforge_proto.v1`. Never edit the output by hand: change the .proto files and
run `make protos`.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "python" / "omniforge_proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted((HERE / "omniforge" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *[str(p.relative_to(HERE)) for p in protos]]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        target = out / "v1"
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "omniforge" / "v1").iterdir()):
            text = re.sub(r"\bfrom omniforge\.v1 import\b", "from omniforge_proto.v1 import", src.read_text())
            (target / src.name).write_text(text)
            written.append(target / src.name)
    (out / "__init__.py").write_text('"""Generated gRPC stubs; run `make protos` to regenerate."""\n')
    (target / "__init__.py").write_text("")
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    files = generate(parser.parse_args().out)
    print(f"wrote {len(files)} files", file=sys.stderr)
