"""The search index on both ChromaDB deployments a user has: embedded on disk, and a real Chroma
server (`chroma run`) through OMNIFORGE_CHROMA_URL; and the fusion service's own calls over gRPC."""
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from omniforge_fusion.index import InvalidIndexRequest, NotFound, SearchIndex, StaleCollection
from support import free_port, wait_for

MODEL = ("clip-x", "1")


def unit(rows):
    v = np.asarray(rows, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def exercise(index: SearchIndex):
    vecs = unit(np.eye(4)[:3] + 0.01)
    assert index.add("things", ids=["a", "b", "c"], embeddings=vecs, captions=["apple", "boat", "cat"],
                     metadatas=[{"n": 1}, {}, {"tag": "pet"}], model=MODEL) == 3
    hits = index.search("things", vecs[2], k=2, model=MODEL)
    assert [h.id for h in hits][0] == "c" and hits[0].score > 0.99 and hits[0].metadata == {"tag": "pet"}
    assert index.delete("things", ["b", "zzz"]) == (1, 2)
    with pytest.raises(StaleCollection, match="holds vectors of clip-x:1"):
        index.search("things", vecs[0], k=1, model=("clip-x", "2"))
    with pytest.raises(NotFound, match="does not exist"):
        index.search("nothing-here", vecs[0], k=1, model=MODEL)
    with pytest.raises(InvalidIndexRequest, match="out of range"):
        index.search("things", vecs[0], k=0, model=MODEL)
    assert ("things", 2, "clip-x", "1") in index.collections()


def test_embedded_index_persists_on_disk(tmp_path):
    exercise(SearchIndex(path=tmp_path / "chroma"))
    reopened = SearchIndex(path=tmp_path / "chroma")
    assert ("things", 2, "clip-x", "1") in reopened.collections()


def test_a_chroma_server_through_its_url(tmp_path):
    chroma = Path(sys.executable).parent / "chroma"
    port = free_port()
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path / "server"), "--port", str(port)],
                            stdout=open(tmp_path / "chroma.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: SearchIndex(url=f"http://127.0.0.1:{port}").collections() is not None, timeout=60,
                 what="chroma server")
        exercise(SearchIndex(url=f"http://127.0.0.1:{port}"))
        assert (tmp_path / "server").exists()
    finally:
        proc.terminate()
        proc.wait(15)


def test_similarity_and_models_over_grpc(fusion_service, tiny_images):
    import io

    from PIL import Image

    from omniforge_proto.v1 import common_pb2, fusion_pb2, fusion_pb2_grpc
    from omniforge_training.data.image_text import load_image_text

    ds = load_image_text(tiny_images)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(ds.images[0])).save(buf, "PNG")
    with grpc.insecure_channel(fusion_service.address) as ch:
        stub = fusion_pb2_grpc.FusionServiceStub(ch)
        reply = stub.Similarity(fusion_pb2.SimilarityRequest(
            query=fusion_pb2.EmbedInput(image=buf.getvalue()),
            candidates=[fusion_pb2.EmbedInput(image=buf.getvalue()), fusion_pb2.EmbedInput(text="a boat")]))
        assert reply.scores[0] > 0.999 and -1 <= reply.scores[1] < reply.scores[0]
        models = stub.ListModels(common_pb2.ListModelsRequest()).models
        assert models[0].name == "tiny-clip" and models[0].task == "embedding"
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(fusion_pb2.EmbedRequest(inputs=[fusion_pb2.EmbedInput()]))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "send a text, an image or audio" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(fusion_pb2.EmbedRequest(model=common_pb2.ModelRef(name="nope"),
                                               inputs=[fusion_pb2.EmbedInput(text="x")]))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
