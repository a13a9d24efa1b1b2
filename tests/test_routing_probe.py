"""The small reward model: a linear Bradley-Terry fit on hashed n-grams, trained per mix."""

import numpy as np
import pytest
import scipy.sparse as sp

from hps_core.routing import reward_probe as R


def toy():
    """Responses containing "helpful" beat those containing "rude"; position a/b alternates."""
    a = ["a helpful reply", "a rude reply", "very helpful", "so rude", "helpful indeed", "rude again"]
    b = ["a rude reply", "a helpful reply", "so rude", "very helpful", "rude again", "helpful indeed"]
    gold = np.array(["a", "b", "a", "b", "a", "b"], dtype=object)
    vec = R.featurizer(n_features=1024)
    return R.pair_differences(vec, a, b), gold


def test_learns_the_preferred_words_and_scores_gold_pairs():
    diff, gold = toy()
    theta = R.train_bradley_terry(diff, gold, l2=0.1)
    assert R.gold_accuracy(theta, diff, gold) == 1.0
    flipped = np.where(gold == "a", "b", "a").astype(object)
    assert R.gold_accuracy(R.train_bradley_terry(diff, flipped, l2=0.1), diff, gold) == 0.0


def test_gradient_matches_the_bradley_terry_loss_at_its_optimum():
    """At the optimum the gradient X^T (sigmoid(X theta) - t) + l2 theta is zero (t = 0.5 for a tie)."""
    diff, gold = toy()
    labels = gold.copy()
    labels[0] = "tie"
    theta = R.train_bradley_terry(diff, labels, l2=0.5, tol=1e-10)
    _, t = R.targets(labels, "half")
    grad = diff.T @ (1 / (1 + np.exp(-(diff @ theta))) - t) + 0.5 * theta
    assert np.abs(grad).max() < 1e-5


def test_ties_half_or_dropped_and_exact_margin_ties_count_half():
    rows, t = R.targets(np.array(["a", "tie", "b"], dtype=object), "half")
    assert rows.tolist() == [0, 1, 2] and t.tolist() == [1.0, 0.5, 0.0]
    rows, t = R.targets(np.array(["a", "tie", "b"], dtype=object), "drop")
    assert rows.tolist() == [0, 2] and t.tolist() == [1.0, 0.0]
    diff = sp.csr_matrix(np.array([[1.0], [0.0], [-1.0]]))
    assert R.gold_accuracy(np.array([1.0]), diff, np.array(["a", "a", "a"], dtype=object)) == pytest.approx(0.5)


def test_score_mixes_uses_each_mix_label_source():
    """Humans right, the AI always wrong: the all-human mix scores 1, the all-AI mix 0."""
    diff, gold = toy()
    ai = np.where(gold == "a", "b", "a").astype(object)
    masks = np.array([np.ones(6, bool), np.zeros(6, bool)])
    np.testing.assert_allclose(R.score_mixes(masks, diff, gold, ai, diff, gold, l2=0.1), [1.0, 0.0])
    assert R.mix_labels(np.array([True, False]), np.array(["a", "a"]), np.array(["b", "b"])).tolist() == ["a", "b"]
