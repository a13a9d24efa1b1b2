"""On-policy hardness: negatives drawn at each optimizer step by the policy of the moment (HPS_METHOD.md 7b).

For every example of the step (one training group), the trainer draws its negative from
``q(j) = softmax_j(gamma_s * s_j + gamma_r * r_j)`` over the dispreferred responses, where ``s`` are the
reward-model scores, ``gamma_s`` the score schedule's value at the step (0 for ``hardness = "policy"``) and
``r_j = beta * (log pi_theta - log pi_ref)(y_j | x)`` the current policy's implicit reward (no gradient).

The implicit rewards live in a cache, one entry per (group, dispreferred rank), stamped with the step
that computed it. Before a step, the entries of its groups older than ``refresh_every`` steps are
recomputed by ONE no-grad pass over those responses (prompts shared, as in the reference pass). With
``refresh_top_m = M > 0`` the negative is drawn among the top-M responses by score only, and only their
rewards are refreshed: the pass costs M responses instead of n - 1 (a response never refreshed would keep
its reference value 0 and look harder than the ones the policy has learnt to push down). While the
policy is still the reference (step 0) every ``r_j`` is 0 and no pass runs. The training forward writes the
drawn negative's fresh reward back (one process only: under DDP each rank sees only its shard, and the
caches must stay identical on every rank for the draws to agree). A resumed run starts with a cold cache
(entries at their reference value, refreshed when due), so with ``refresh_every > 1`` its draws after the
resume can differ from an uninterrupted run's.

``estimator = "unbiased"`` draws ``j`` from ``p(j) ∝ q(j) exp(r_j)`` instead and hands the loss
``log sum_j q_j exp(r_j)`` (``hps_core.train.losses.hps_unbiased_loss``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hps_core.sampling.hardness import draw_index, policy_hardness_probs


class OnlineHardness:
    """The implicit-reward cache and the per-step draw for one preference run."""

    def __init__(self, groups: pd.DataFrame, cfg, seed: int, logps_fn, ref_logps: torch.Tensor, slot: dict):
        """``logps_fn(sequence slots) -> summed log-probs`` runs the no-grad policy pass; ``ref_logps`` and
        ``slot`` ((group, rank) -> index) address the reference log-probs of every response."""
        self.groups, self.cfg, self.seed = groups, cfg, seed
        self.logps_fn, self.ref_logps, self.slot = logps_fn, ref_logps, slot
        self.rewards = [np.zeros(int(n) - 1) for n in groups["n"]]  # r_j of rank j + 1; 0 = the reference's
        self.stamps = [np.zeros(int(n) - 1, dtype=np.int64) for n in groups["n"]]
        self.drawn: list[dict] = []
        self.refreshed = 0
        self.gamma_r = 0.0 if cfg.hardness == "score" else float(cfg.gamma_r)

    def refresh(self, step: int, group_indices: list[int]) -> None:
        """Recompute the stale implicit rewards of these groups' dispreferred responses (one pass)."""
        if step == 0 or (self.gamma_r == 0 and self.cfg.estimator == "pair"):
            return  # the policy is the reference (every r_j is exactly 0), or the draw does not use r
        stale = [(gi, r) for gi in dict.fromkeys(group_indices) for r in range(1, self.candidates(gi) + 1)
                 if step - self.stamps[gi][r - 1] >= self.cfg.refresh_every]
        if not stale:
            return
        slots = [self.slot[k] for k in stale]
        logps = self.logps_fn(slots)
        for (gi, r), lp, s in zip(stale, logps.tolist(), slots):
            self.write_back(gi, r, lp, step, s)
        self.refreshed += len(stale)

    def candidates(self, gi: int) -> int:
        """How many dispreferred responses of group ``gi`` the draw considers (ranks 1..this): the top-M by
        score with ``refresh_top_m = M``, else all of them."""
        n_disp = int(self.groups["n"].iloc[gi]) - 1
        return min(self.cfg.refresh_top_m, n_disp) if self.cfg.refresh_top_m else n_disp

    def write_back(self, gi: int, rank: int, logp: float, step: int, slot: int | None = None) -> None:
        """Store ``beta * (log pi - log pi_ref)`` of response ``rank`` of group ``gi`` as of ``step``."""
        slot = self.slot[(gi, rank)] if slot is None else slot
        self.rewards[gi][rank - 1] = self.cfg.beta * (float(logp) - float(self.ref_logps[slot]))
        self.stamps[gi][rank - 1] = step

    def draw(self, step: int, epoch: int, examples: list[dict]) -> None:
        """Fill each example's negative (``seqs[1]``) by the hardness of the moment; one seeded stream per
        step, examples in plan order. Records every draw (step, ranks, gammas, probabilities)."""
        rng = np.random.default_rng([self.seed, 3, step])
        for ex in examples:
            gi = ex["group"]
            group = self.groups.iloc[gi]
            scores = np.asarray(group["scores"][1 : self.candidates(gi) + 1], dtype=np.float64)  # ranked: top-M by score
            rewards = self.rewards[gi][: len(scores)]
            gamma_s = 0.0 if self.cfg.hardness == "policy" else float(ex["gamma"])
            ex["gamma"] = gamma_s  # what the step's logged gamma reports
            q = policy_hardness_probs(scores, rewards, gamma_s, self.gamma_r)
            if self.cfg.estimator == "unbiased":  # p(j) ∝ q(j) exp(r_j)
                p = policy_hardness_probs(scores, rewards, gamma_s, self.gamma_r + 1.0)
                with np.errstate(divide="ignore"):  # a q that underflowed to 0 adds nothing
                    terms = np.log(q) + rewards
                ex["log_mass"] = float(terms.max() + np.log(np.exp(terms - terms.max()).sum()))
            else:
                p = q
            j = draw_index(p, rng)
            ex["seqs"] = [(gi, 0), (gi, j + 1)]
            self.drawn.append({
                "epoch": epoch, "step": step, "prompt_id": group["prompt_id"], "negative_rank": j + 1,
                "negative_id": group["response_ids"][j + 1], "gamma": gamma_s, "gamma_r": self.gamma_r,
                "q": float(q[j]), "p_draw": float(p[j]), "n_dispreferred": int(group["n"]) - 1, "candidates": len(scores),
                "reward_of_negative": float(rewards[j]), "reward_max": float(rewards.max()),
            })

    def table(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.drawn)
