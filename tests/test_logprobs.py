"""Shared-prompt rows (batching.collate_shared): a prompt computed once for all its responses gives every
response the log-probs, token counts and gradients it gets alone after its prompt (batching.collate)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from hps_core.data.encoding import Encoded, collate
from hps_core.train.batching import collate_shared, shared_length, shared_prompt_batches
from hps_core.train.logprobs import response_logps

PAD = 0


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def _seq(prompt: list[int], response: list[int]) -> Encoded:
    return Encoded(prompt + response, len(prompt))


# Three examples: a pair, a pair whose responses differ in length, three responses (a PL example).
GROUPS = [
    [_seq([1, 5, 6, 7], [8, 9, 2]), _seq([1, 5, 6, 7], [10, 2])],
    [_seq([1, 11, 12], [13, 14, 15, 16, 17, 2]), _seq([1, 11, 12], [18, 2])],
    [_seq([1, 20, 21, 22, 23, 24], r) for r in ([25, 2], [26, 27, 2], [2])],
]


def _flat_and_shared(model, groups, attention):
    model.config._attn_implementation = attention
    try:
        flat = response_logps(model, collate([e for g in groups for e in g], PAD))
        shared = response_logps(model, collate_shared(groups, PAD))
    finally:
        model.config._attn_implementation = "sdpa"
    return flat, shared


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_rows_give_each_response_its_own_log_probs(model, attention):
    flat, shared = _flat_and_shared(model, GROUPS, attention)
    assert_close(shared[0], flat[0], rtol=0, atol=1e-5)
    assert shared[1].tolist() == flat[1].tolist() == [3, 2, 6, 2, 2, 3, 1]  # every response token is scored


def test_attention_without_custom_masks_gets_one_row_per_sequence(model, monkeypatch):
    """flash attention cannot take the shared-prompt mask: the batch is unpacked (prompt + response rows)."""
    from hps_core.train import logprobs

    unpacked = []
    real_unshare = logprobs.unshare
    monkeypatch.setattr(logprobs, "_attention_of", lambda m: "flash_attention_2")
    monkeypatch.setattr(logprobs, "unshare", lambda b: unpacked.append(real_unshare(b)) or unpacked[-1])
    flat = response_logps(model, collate([e for g in GROUPS for e in g], PAD))
    shared = response_logps(model, collate_shared(GROUPS, PAD))
    assert len(unpacked) == 1 and unpacked[0]["input_ids"].shape[0] == 7
    assert_close(shared[0], flat[0], rtol=0, atol=1e-5)
    assert shared[1].tolist() == flat[1].tolist()


def test_shared_rows_give_the_same_gradients(model):
    grads = []
    for make in (lambda: collate([e for g in GROUPS for e in g], PAD), lambda: collate_shared(GROUPS, PAD)):
        model.zero_grad()
        sums, _ = response_logps(model, make())
        (sums * torch.arange(1.0, 8.0)).sum().backward()  # weights tell the sequences apart
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


def test_shared_row_layout_by_hand():
    """Row 0 of the first example: prompt [1 5 6 7], response A [8 9 2], response B [10 2]. Positions restart
    after the prompt; A's first token is predicted at the prompt's last position (3), B's too."""
    batch = collate_shared(GROUPS[:1], PAD)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 8, 9, 2, 10, 2]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 2, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 4, 5]]
    assert batch["score_cols"].tolist() == [3, 4, 5, 3, 7]
    assert batch["score_targets"].tolist() == [8, 9, 2, 10, 2]
    assert batch["score_seqs"].tolist() == [0, 0, 0, 1, 1]
    assert shared_length(GROUPS[0]) == 9 and shared_length(GROUPS[2]) == 12


def test_sequences_of_other_prompts_cannot_share_a_row():
    with pytest.raises(ValueError, match="another prompt"):
        collate_shared([[GROUPS[0][0], GROUPS[1][0]]], PAD)


def test_reference_batches_group_by_prompt_and_hold_at_most_batch_size_sequences():
    encoded = [e for g in GROUPS for e in g]  # 7 sequences, 3 prompts
    batches = shared_prompt_batches(encoded, batch_size=3)
    rows = [row for batch in batches for row in batch]
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(len({tuple(encoded[i].input_ids[: encoded[i].n_prompt]) for i in row}) == 1 for row in rows)
    assert all(sum(map(len, batch)) <= 3 for batch in batches)
    assert [len(b) for b in shared_prompt_batches(encoded, batch_size=2)] == [1, 1, 1, 1]  # the 3-group is split


def test_shared_prompt_batches_by_hand():
    """Sequences 0, 1, 3 share prompt A (2 tokens), 2 has prompt B (1 token), 4 prompt C (3 tokens);
    batch_size 2. Rows (at most 2 sequences): A -> [0, 1] and [3]; B -> [2]; C -> [4]. Row lengths
    (prompt once + responses): [0, 1] 2 + 1 + 2 = 5, [3] 3, [2] 1 + 3 = 4, [4] 3 + 1 = 4; sorted (ties
    keep their order): [3], [2], [4], [0, 1]. Filling batches of at most 2 sequences: [[3], [2]] (exactly
    2), then [[4]] ([0, 1] would make 3), then [[0, 1]]."""
    encoded = [Encoded([1, 2, 10], 2), Encoded([1, 2, 11, 12], 2), Encoded([3, 20, 21, 22], 1),
               Encoded([1, 2, 13], 2), Encoded([4, 5, 6, 30], 3)]
    assert shared_prompt_batches(encoded, 2) == [[[3], [2]], [[4]], [[0, 1]]]
    # batch_size 3: one A row [0, 1, 3] (6 tokens) after B and C (4 each): [[2], [4]] then [[0, 1, 3]]
    assert shared_prompt_batches(encoded, 3) == [[[2], [4]], [[0, 1, 3]]]
    assert shared_prompt_batches([], 2) == []


def test_length_grouped_batches_sort_within_megabatches_and_cover_every_index_once():
    """Distinct lengths (length of i = (7 i) mod 34 + 1). With one megabatch covering everything, the
    batches are the indices sorted longest first, cut into batch_size pieces (in shuffled order). With
    the default megabatch (16 batches, so 32 indices for batch_size 2) over 34 indices, the first 32 of
    the shuffled order are sorted among themselves and the last 2 form their own batch."""
    import numpy as np

    from hps_core.train.batching import length_grouped_batches

    lengths = [(7 * i) % 34 + 1 for i in range(34)]
    by_length = sorted(range(34), key=lambda i: -lengths[i])
    one_chunk = list(length_grouped_batches(lengths, 2, np.random.default_rng(0), megabatch=17))
    assert sorted(map(tuple, one_chunk)) == sorted(tuple(by_length[k : k + 2]) for k in range(0, 34, 2))
    for seed in range(3):
        batches = list(length_grouped_batches(lengths, 2, np.random.default_rng(seed)))
        assert sorted(i for b in batches for i in b) == list(range(34)) and all(len(b) == 2 for b in batches)
        tail = sorted(np.random.default_rng(seed).permutation(34)[32:].tolist(), key=lambda i: -lengths[i])
        assert tail in batches
        head = sorted(np.random.default_rng(seed).permutation(34)[:32].tolist(), key=lambda i: -lengths[i])
        assert sorted(map(tuple, (b for b in batches if b != tail))) == sorted(tuple(head[k : k + 2]) for k in range(0, 32, 2))
    assert list(length_grouped_batches([3, 1, 2], 2, np.random.default_rng(0))) in ([[0, 2], [1]], [[1], [0, 2]])


class _Configured(torch.nn.Module):
    """Just a config and one parameter: what the attention-mask helpers read of a model."""

    def __init__(self, attn, dtype=torch.float32, **config):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(**({"_attn_implementation": attn} if attn != "absent" else {}), **config)
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=dtype))


def test_attention_implementation_defaults_to_eager():
    from hps_core.train.logprobs import _attention_of

    assert _attention_of(_Configured("sdpa")) == "sdpa" and _attention_of(_Configured("flash_attention_2")) == "flash_attention_2"
    assert _attention_of(_Configured(None)) == "eager" and _attention_of(_Configured("absent")) == "eager"


# Segments [prompt, prompt, response 1, response 2, padding]: a query sees earlier keys of the prompt
# and of its own segment (padding sees the prompt and itself).
SEGMENTS = torch.tensor([[0, 0, 1, 2, -1]])
ALLOWED = [[1, 0, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0],
           [1, 1, 0, 1, 0],
           [1, 1, 0, 0, 1]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_shared_prompt_mask_by_hand(dtype):
    from hps_core.train.logprobs import shared_prompt_mask

    sdpa = shared_prompt_mask(SEGMENTS, _Configured("sdpa", dtype))
    assert sdpa.dtype == torch.bool and sdpa.shape == (1, 1, 5, 5) and sdpa[0, 0].int().tolist() == ALLOWED
    eager = shared_prompt_mask(SEGMENTS, _Configured("eager", dtype))
    low = torch.finfo(dtype).min
    assert eager.dtype == dtype and eager.shape == (1, 1, 5, 5)
    assert eager[0, 0].tolist() == [[0.0 if a else low for a in row] for row in ALLOWED]


def test_collate_shared_by_hand():
    """Row 0: prompt [1, 2] with responses [3] and [4, 5]; row 1: prompt [6] with response [7, 8, 9]."""
    batch = collate_shared([[Encoded([1, 2, 3], 2), Encoded([1, 2, 4, 5], 2)], [Encoded([6, 7, 8, 9], 1)]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 2, 2], [0, 1, 1, 1, -1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 1, 2, 3, 0]]
    # response tokens and the positions predicting them: 3 at 1 (prompt end), 4 at 1, 5 at 3; 7 at 0, 8 at 1, 9 at 2
    assert batch["score_rows"].tolist() == [0, 0, 0, 1, 1, 1] and batch["score_cols"].tolist() == [1, 1, 3, 0, 1, 2]
    assert batch["score_targets"].tolist() == [3, 4, 5, 7, 8, 9] and batch["score_seqs"].tolist() == [0, 1, 1, 2, 2, 2]
    assert int(batch["n_sequences"]) == 3
    assert all(v.dtype == torch.long for v in batch.values())
    empty = collate_shared([[Encoded([1, 2], 2)]], pad_id=0)  # a response with no tokens: nothing to score
    assert all(empty[k].dtype == torch.long and empty[k].numel() == 0
               for k in ("score_rows", "score_cols", "score_targets", "score_seqs"))
    with pytest.raises(ValueError) as exc:
        collate_shared([[Encoded([1, 2, 3], 2), Encoded([1, 9, 4], 2)]], pad_id=0)
    assert str(exc.value) == ("collate_shared: sequence 2 of row 0 has another prompt than the row's first; only the "
                              "responses of one prompt (same prompt tokens) can share a row")



def test_backbone_and_head_are_required_by_name():
    from hps_core.train.logprobs import _backbone_and_head

    class Headless(torch.nn.Module):
        base_model_prefix = "model"

        def __init__(self, with_backbone: bool):
            super().__init__()
            if with_backbone:
                self.model = torch.nn.Linear(2, 2)

        def get_output_embeddings(self):
            return None

    for model in (Headless(False), Headless(True)):
        with pytest.raises(TypeError) as exc:
            _backbone_and_head(model)
        assert str(exc.value) == "Headless has no separate backbone/LM head; is it a causal LM?"


def test_a_sequence_without_response_tokens_counts_zero(model):
    """The last sequence has no response token: its sum is 0 and its count 0 (one entry per sequence)."""
    sums, counts = response_logps(model, collate([Encoded([1, 2, 3], 1), Encoded([4, 5], 2)], pad_id=0))
    assert counts.tolist() == [2, 0] and sums[1].item() == 0.0 and sums.shape == (2,)
    shared_sums, shared_counts = response_logps(model, collate_shared([[Encoded([1, 2, 3], 1)], [Encoded([4, 5], 2)]],
                                                                      pad_id=0))
    assert shared_counts.tolist() == [2, 0] and shared_sums.shape == (2,)
