import json

import numpy as np
import pytest

from omniforge_training.data.clean import CleanStats, MinHashDeduper, clean_documents, normalise
from omniforge_training.data.dataset import build_dataset, is_val, load_dataset_manifest, open_tokens
from omniforge_training.data.ingest import DataError, read_documents

ENGLISH = ("The river runs through the old town, past the market and the church, and on to the sea. "
           "Every spring the water rises and the people carry their goods to higher ground. When the flood "
           "is over they come back down, clean the mud from their floors, and open their shops again as if "
           "nothing had happened at all.")
FRENCH = ("La rivière traverse la vieille ville, passe devant le marché et l'église, puis rejoint la mer. "
          "Chaque printemps, l'eau monte et les habitants portent leurs biens plus haut. Quand la crue est "
          "passée, ils redescendent, nettoient la boue de leurs sols et rouvrent leurs boutiques.")


def test_reads_text_jsonl_parquet_and_saved_hf_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    docs = ["first document", "second document"]
    (tmp_path / "a.txt").write_text("\n\n".join(docs))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet")
    Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "hf"))
    for name in ("a.txt", "a.jsonl", "a.parquet", "hf"):
        assert list(read_documents(tmp_path / name)) == docs, name


def test_unreadable_inputs_say_what_to_give(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_documents(tmp_path / "missing.txt"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unknown format '.csv'"):
        list(read_documents(tmp_path / "x.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2 is not JSON"):
        list(read_documents(tmp_path / "bad.jsonl"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        list(read_documents(tmp_path / "latin1.txt"))


def test_cleaning_fixes_text_and_drops_duplicates_and_other_languages():
    near = ENGLISH.replace("old town", "old city")
    stats = CleanStats()
    kept = clean_documents([ENGLISH, ENGLISH, near, FRENCH, "   ", "The cafÃ© is open.  \r\nYes."], stats=stats)
    assert kept == [ENGLISH, "The café is open.\nYes."]
    assert (stats.exact_duplicates, stats.near_duplicates, stats.other_language, stats.empty) == (1, 1, 1, 1)


def test_normalise_collapses_spaces_but_keeps_lines():
    assert normalise("a  \t b\u00a0c\n\n\n\nd  ") == "a b c\n\nd"


def test_minhash_tells_near_from_different():
    d = MinHashDeduper()
    assert not d.is_duplicate(ENGLISH)
    assert d.is_duplicate(ENGLISH.replace("market", "markets"))
    assert not d.is_duplicate(FRENCH)


def test_split_is_deterministic_and_content_based():
    docs = [f"document number {i}" for i in range(2000)]
    split = [is_val(d, 0.1, seed=1) for d in docs]
    assert split == [is_val(d, 0.1, seed=1) for d in docs]
    assert 0.07 < sum(split) / len(docs) < 0.13
    assert split != [is_val(d, 0.1, seed=2) for d in docs]


def test_build_dataset_writes_memory_mapped_tokens_and_a_manifest(tmp_path, corpus):
    text = corpus.read_text()
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": text[i:i + 400]}) for i in range(0, 120_000, 400)))
    manifest = build_dataset([src], tmp_path / "ds", name="river", tokenizer="bpe", vocab_size=300,
                             val_fraction=0.1, language=None, log=lambda m: None)
    assert load_dataset_manifest(tmp_path / "ds") == manifest
    train = open_tokens(tmp_path / "ds" / "train.bin", manifest["dtype"])
    assert isinstance(train, np.memmap) and len(train) == manifest["counts"]["train_tokens"]
    assert manifest["sources"][0]["sha256"] and len(manifest["content_hash"]) == 64
    again = build_dataset([src], tmp_path / "ds2", name="river", tokenizer="bpe", vocab_size=300,
                          val_fraction=0.1, language=None, log=lambda m: None)
    assert again["content_hash"] == manifest["content_hash"]        # same inputs, same dataset
