"""The Kneser-Ney trigram we write as ARPA: proper distributions, and better than lower orders on
held-out text."""
import math
import random

from omniforge_training.ngram_lm import _score, perplexity, train_kneser_ney, write_arpa


def corpus(n=3000, seed=0):
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the teacher"], ["sees", "likes", "finds"], \
        ["the ball", "a book", "the garden", "some bread"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}".split() for _ in range(n)]


def test_every_context_is_a_distribution():
    lm = train_kneser_ney(corpus(500), 3)
    for ctx in [("the", "cat"), ("<s>",), ("likes",), ("never", "seen")]:
        total = sum(10 ** _score(lm["grams"], ctx + (w,)) for w in lm["vocab"] if w != "<s>")
        assert math.isclose(total, 1.0, rel_tol=1e-6), ctx


def test_higher_orders_predict_held_out_text_better():
    train, test = corpus(3000, 0), corpus(300, 1)
    ppl = [perplexity(train_kneser_ney(train, n), test) for n in (1, 2, 3)]
    assert ppl[0] > ppl[1] > ppl[2]
    pruned = train_kneser_ney(train, 3, min_count=3)
    assert perplexity(pruned, test) < ppl[1] * 1.05


def test_arpa_file_layout(tmp_path):
    lm = train_kneser_ney(corpus(200), 3)
    write_arpa(lm, tmp_path / "lm.arpa")
    text = (tmp_path / "lm.arpa").read_text()
    assert text.startswith("\\data\\\n") and text.rstrip().endswith("\\end\\")
    for n, level in enumerate(lm["grams"], 1):
        assert f"ngram {n}={len(level)}" in text and f"\\{n}-grams:" in text
