"""Candidate mixes: which instances get the human label (True) and which the AI label (False).

As in HyPER's code (``scripts/get_count_feats.py``): a budget, then a **tag-driven fill** -- the tags in
a random order, each tag's carriers in a random order, added until the budget is spent -- so mixes differ
in *which kinds* of instances humans label, not just how many. **Random** mixes (a uniform subset of the
budget's size) are mixed in for coverage. Training mixes draw their budgets without replacement from
1..n (the paper's); the all-AI and all-human mixes are always added as anchors. Masks are boolean arrays
of length n; a mix is summarised by :func:`tag_counts`, the number of human-routed carriers of each tag.
"""

from __future__ import annotations

import numpy as np

KINDS = ("random", "tag_fill", "anchor")


def random_mix(n: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[rng.choice(n, size=budget, replace=False)] = True
    return mask


def tag_fill_mix(tags: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Tags in random order; each tag's carriers (shuffled) routed to humans until ``budget`` is reached.
    If the tags' carriers run out first (instances with no tag), the rest is filled at random."""
    n = tags.shape[0]
    mask = np.zeros(n, bool)
    taken = 0
    for t in rng.permutation(tags.shape[1]):
        if taken >= budget:
            break
        carriers = np.flatnonzero(tags[:, t] & ~mask)
        pick = rng.permutation(carriers)[: budget - taken]
        mask[pick] = True
        taken += len(pick)
    if taken < budget:
        rest = np.flatnonzero(~mask)
        mask[rng.choice(rest, size=budget - taken, replace=False)] = True
    return mask


def tag_counts(masks: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """(mixes x tags) number of human-routed instances carrying each tag."""
    return np.atleast_2d(masks).astype(np.int64) @ tags.astype(np.int64)


def _unique(masks: list[np.ndarray], kinds: list[str]) -> tuple[np.ndarray, list[str]]:
    seen, keep = set(), []
    for i, m in enumerate(masks):
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.array([masks[i] for i in keep]), [kinds[i] for i in keep]


def training_mixes(tags: np.ndarray, n_mixes: int, random_share: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n_mixes`` distinct mixes (budgets drawn without replacement from 1..n-1, a ``random_share`` of
    them routed at random, the rest tag-driven) plus the all-AI and all-human anchors."""
    n = tags.shape[0]
    rng = np.random.default_rng(seed)
    budgets = rng.choice(np.arange(1, n), size=min(n_mixes, n - 1), replace=False)
    n_random = int(round(random_share * len(budgets)))
    masks = [np.zeros(n, bool), np.ones(n, bool)]
    kinds = ["anchor", "anchor"]
    for k, b in enumerate(budgets):
        if k < n_random:
            masks.append(random_mix(n, int(b), rng))
            kinds.append("random")
        else:
            masks.append(tag_fill_mix(tags, int(b), rng))
            kinds.append("tag_fill")
    return _unique(masks, kinds)


def candidates_at_budget(tags: np.ndarray, budget: int, n_candidates: int, random_share: float, seed: int,
                         max_tries: int = 10) -> tuple[np.ndarray, list[str]]:
    """Up to ``n_candidates`` distinct mixes of exactly ``budget`` human labels (fewer only when that many
    distinct mixes do not exist, e.g. budget 0 or n)."""
    n = tags.shape[0]
    rng = np.random.default_rng(seed)
    masks, kinds = [], []
    n_random = int(round(random_share * n_candidates))
    for k in range(n_candidates * max_tries):
        if k % n_candidates < n_random:
            masks.append(random_mix(n, budget, rng))
            kinds.append("random")
        else:
            masks.append(tag_fill_mix(tags, budget, rng))
            kinds.append("tag_fill")
        if (k + 1) % n_candidates == 0:
            unique, unique_kinds = _unique(masks, kinds)
            if len(unique) >= n_candidates:
                return unique[:n_candidates], unique_kinds[:n_candidates]
    return _unique(masks, kinds)
