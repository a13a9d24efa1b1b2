"""Hand-derived values where other tests compare the code with itself: summed response log-probs against
log-softmaxes summed by hand, prompt truncation against the tokens that must be kept, secret masking in
non-http URIs and at the minimum secret length, and seeded negative draws across processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from hps_core.common.redaction import MASK, MIN_SECRET_LEN, redact_mapping, scrub_text, secret_values
from hps_core.data.encoding import Encoded, Encoder, collate
from hps_core.train.batching import collate_shared
from hps_core.train.logprobs import response_logps

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- summed response log-probs
# A bigram LM whose next-token distribution depends only on the current token (4 tokens):
#   after 0: (1/2, 1/4, 1/8, 1/8)    after 1: (1/8, 1/2, 1/4, 1/8)
#   after 2: (1/4, 1/8, 1/8, 1/2)    after 3: (1/8, 1/8, 1/2, 1/4)
# Its logits are log p + 3 * (current token): the log-softmax removes the shift, a sum of raw logits does not.
NEXT = torch.tensor([[1 / 2, 1 / 4, 1 / 8, 1 / 8], [1 / 8, 1 / 2, 1 / 4, 1 / 8],
                     [1 / 4, 1 / 8, 1 / 8, 1 / 2], [1 / 8, 1 / 8, 1 / 2, 1 / 4]], dtype=torch.float64)
# Three sequences (prompt | response), each response token t read from the distribution after token t - 1:
#   A = 0 1 | 2 3 3: p(2|1) p(3|2) p(3|3) = 1/4 * 1/2 * 1/4 -> -2 ln2 - ln2 - 2 ln2 = -5 ln2, 3 tokens
#   B = 0 1 | 3 2  : p(3|1) p(2|3)        = 1/8 * 1/2       -> -3 ln2 - ln2 = -4 ln2, 2 tokens
#   C = 3   | 2    : p(2|3)               = 1/2             -> -ln2, 1 token
# What the usual mistakes give instead: token t read at position t (off by one): A p(2|2) p(3|3) p(3|3) =
# -7 ln2, B p(3|3) p(2|2) = -5 ln2, C p(2|2) = -3 ln2; the prompt's last token counted as a response token:
# + log p(1|0) = -2 ln2 on A and B; in the shared row "0 1 2 3 3 3 2", B's first token read after A's
# last token 3 instead of the prompt's 1: p(3|3) p(2|3) = -3 ln2.
SEQS = [Encoded([0, 1, 2, 3, 3], 2), Encoded([0, 1, 3, 2], 2), Encoded([3, 2], 1)]
HAND_SUMS = [-5 * LN2, -4 * LN2, -1 * LN2]
HAND_COUNTS = [3, 2, 1]


class _OneHot(torch.nn.Module):
    """Backbone: the hidden state at a position is the one-hot vector of its token (no mixing across
    positions, so any attention mask or position ids give the same states)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)
        self.embed.weight.data = torch.eye(vocab)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))


class BigramLM(torch.nn.Module):
    base_model_prefix = "model"

    def __init__(self, next_probs: torch.Tensor, attention: str):
        super().__init__()
        vocab = next_probs.shape[0]
        self.model = _OneHot(vocab)
        self.lm_head = torch.nn.Linear(vocab, vocab, bias=False)
        logits = next_probs.log() + 3.0 * torch.arange(vocab, dtype=torch.float64)[:, None]
        self.lm_head.weight.data = logits.T.float().contiguous()  # head(one_hot(v)) = logits[v]
        self.config = SimpleNamespace(_attn_implementation=attention)

    def get_output_embeddings(self):
        return self.lm_head


@pytest.mark.parametrize("layout, attention", [("rows", "sdpa"), ("shared", "sdpa"), ("shared", "eager"),
                                               ("shared", "flash_attention_2")])
def test_response_logps_are_the_hand_summed_log_softmax(layout, attention):
    """One row per sequence (collate), the shared-prompt rows (collate_shared: A and B share the prompt
    0 1) with a dense mask, and with flash attention (unpacked back into rows): all give the sums above."""
    model = BigramLM(NEXT, attention)
    batch = collate(SEQS, pad_id=0) if layout == "rows" else collate_shared([SEQS[:2], SEQS[2:]], pad_id=0)
    sums, counts = response_logps(model, batch)
    assert counts.tolist() == HAND_COUNTS
    assert_close(sums.double(), torch.tensor(HAND_SUMS, dtype=torch.float64), atol=1e-5, rtol=0)


def test_response_logps_of_a_transformer_are_its_logits_summed_by_hand():
    """A tiny random Llama: the model's ordinary forward (full logits at every position), log-softmaxed and
    summed by hand over the response tokens (token t read at position t - 1), equals response_logps (which
    applies the LM head only at those positions), in both layouts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    seqs = [Encoded([1, 5, 6, 7, 8, 9], 3), Encoded([1, 5, 6, 10, 11], 3), Encoded([1, 20, 21, 22], 2)]
    by_hand = []
    with torch.no_grad():
        for e in seqs:
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].double(), dim=-1)
            by_hand.append(sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.n_prompt, len(e.input_ids))))
        flat, n_flat = response_logps(model, collate(seqs, pad_id=0))
        shared, n_shared = response_logps(model, collate_shared([seqs[:2], seqs[2:]], pad_id=0))
    expected = torch.tensor(by_hand, dtype=torch.float64)
    assert n_flat.tolist() == n_shared.tolist() == [3, 2, 2]
    assert_close(flat.double(), expected, atol=1e-5, rtol=0)
    assert_close(shared.double(), expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- prompt truncation
class WordTokenizer:
    """One token per whitespace-separated word, ids in order of first sight; no chat template of its own
    (ChatFormat then renders the project's plain template: "User: ...\\nAssistant: ...</s>\\n...Assistant:")."""

    chat_template = None
    bos_token = None
    bos_token_id = None
    eos_token = "</s>"

    def __init__(self):
        self.vocab = {"</s>": 0}
        self.eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]}

    def apply_chat_template(self, messages, chat_template, tokenize, add_generation_prompt):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(chat_template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                     eos_token=self.eos_token)

    def words(self, ids):
        inverse = {i: w for w, i in self.vocab.items()}
        return [inverse[i] for i in ids]


# Rendered: "User: first question\nAssistant: first answer</s>\nUser: second question\nAssistant:", i.e. the
# 10 words User: first question Assistant: first answer</s> User: second question Assistant:
TRANSCRIPT = "\n\nHuman: first question\n\nAssistant: first answer\n\nHuman: second question\n\nAssistant:"


@pytest.mark.parametrize("max_prompt, max_length, prompt_words, response_words, truncated", [
    # Room for everything: the 10 prompt words, then " Sure thing" and the end-of-turn token.
    (10, 13, ["User:", "first", "question", "Assistant:", "first", "answer</s>", "User:", "second", "question",
              "Assistant:"], ["Sure", "thing", "</s>"], (0, 0)),
    # 4 prompt tokens: the LEFT end goes; the last turn and the generation prompt, next to the response, stay.
    (4, 7, ["User:", "second", "question", "Assistant:"], ["Sure", "thing", "</s>"], (1, 0)),
    # 6 prompt tokens (the last 6 words), max_length 8: room for 2, so the response's RIGHT end goes.
    (6, 8, ["first", "answer</s>", "User:", "second", "question", "Assistant:"], ["Sure", "thing"], (1, 1)),
])
def test_truncation_keeps_the_turns_next_to_the_response(max_prompt, max_length, prompt_words, response_words,
                                                         truncated):
    tok = WordTokenizer()
    encoder = Encoder(tok, max_prompt, max_length)
    e = encoder.encode(TRANSCRIPT, "Sure thing")
    assert tok.words(e.input_ids[: e.n_prompt]) == prompt_words
    assert tok.words(e.input_ids[e.n_prompt :]) == response_words
    assert (encoder.counter.prompts, encoder.counter.responses, encoder.counter.total) == (*truncated, 1)


# --------------------------------------------------------------------------- secret masking
@pytest.mark.parametrize("uri, masked", [
    ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg2://mlflow:hunter2hunter2@db.internal:5432/mlflow",
     "postgresql+psycopg2://mlflow:***@db.internal:5432/mlflow"),
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY@bucket/path/x.parquet",
     "s3://AKIAIOSFODNN7EXAMPLE:***@bucket/path/x.parquet"),
    ("mongodb+srv://app:p%40ss@cluster0.example.net/db?retryWrites=true",
     "mongodb+srv://app:***@cluster0.example.net/db?retryWrites=true"),
    ("amqp://guest:guestpass@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
])
def test_credentials_inside_non_http_uris_are_masked(uri, masked):
    """The password of any scheme://user:password@host (whatever the scheme, however short), in free text
    and in a config value under a harmless key; user, host, port and path stay readable."""
    assert scrub_text(f"connecting to {uri} now", []) == f"connecting to {masked} now"
    assert redact_mapping({"registry": {"backend_store_uri": uri}}) == {"registry": {"backend_store_uri": masked}}


def test_s3_keys_from_the_environment_are_scrubbed_by_value(monkeypatch):
    """AWS keys are secret by name, so their values are masked wherever they appear (a key pasted into a
    command line, a secret key with '/' that no URL rule would find)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    text = "aws s3 cp --access-key AKIAIOSFODNN7EXAMPLE --secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY s3://b/k"
    assert scrub_text(text) == f"aws s3 cp --access-key {MASK} --secret {MASK} s3://b/k"


def test_a_secret_exactly_at_the_minimum_length_is_scrubbed_one_shorter_is_not():
    """MIN_SECRET_LEN is 8 (hps_core.common.redaction): a value of exactly 8 characters is a secret to scrub;
    7 is too short to scrub by value (its name is still masked). The same floor applies to URL passwords
    found in the environment (those inside URLs are masked in any text anyway)."""
    assert MIN_SECRET_LEN == 8
    env = {"MY_SERVICE_TOKEN": "abcdefgh", "OTHER_TOKEN": "abcdefg",
           "DATABASE_URL": "postgresql://app:pa55word@db/hps", "CACHE_URL": "redis://:pa55wor@cache:6379"}
    assert sorted(secret_values(env)) == ["abcdefgh", "pa55word"]  # both 8 long: no order between them
    assert scrub_text("t=abcdefgh u=abcdefg p=pa55word q=pa55wor", secret_values(env)) == \
        f"t={MASK} u=abcdefg p={MASK} q=pa55wor"


# --------------------------------------------------------------------------- seeds across processes
_DRAW = """
import json, sys
import pandas as pd
from hps_core.sampling.groups import draw_epoch_negatives
from hps_core.sampling.hardness import make_gamma_schedule
groups = pd.DataFrame({"prompt_id": ["p0", "p1", "p2", "p3", "p4"],
                       "response_ids": [[f"p{i}-r{j}" for j in range(4)] for i in range(5)],
                       "scores": [[3.0, 2.0, 1.0, 0.0]] * 5})
out = []
for rule, gamma in (("hps", 0.0), ("hps", 2.0), ("random", 0.0)):
    neg = draw_epoch_negatives(groups, rule=rule, schedule=make_gamma_schedule("constant", gamma=gamma),
                               n_epochs=2, seed=7, examples_per_step=2)
    out.append([neg["prompt_id"].tolist(), neg["negative_rank"].tolist()])
print(json.dumps(out))
"""

# Written down from the draw's documented streams (hps_core.sampling.groups): epoch e's order is
# default_rng([seed, e, 1]).permutation(5); its negatives take one uniform u each from default_rng([seed, e]),
# in training order. Seed 7: u = 0.625, 0.897, 0.776, 0.225, 0.300 (epoch 0), 0.770, 0.112, 0.189, 0.160,
# 0.432 (epoch 1). With gamma = 0 the hardness distribution over the 3 dispreferred responses is uniform, so
# the rank is 1 + floor(3u) (inverse CDF); with gamma = 2 it is softmax(2 * (2, 1, 0)) = (e^4, e^2, 1) /
# (e^4 + e^2 + 1), CDF (0.8668, 0.9841, 1): rank 1 below 0.8668, 2 below 0.9841, else 3. "random" takes
# rng.integers(3) + 1 from the same stream.
ORDER = ["p2", "p3", "p4", "p1", "p0", "p4", "p1", "p0", "p3", "p2"]
RANKS = {"hps@0": [2, 3, 3, 1, 1, 3, 1, 1, 1, 2], "hps@2": [1, 2, 1, 1, 1, 1, 1, 1, 1, 1],
         "random": [3, 2, 3, 3, 2, 3, 3, 3, 1, 1]}


def test_negative_draws_are_the_same_in_another_process_and_match_the_written_down_draw():
    """The negatives of a fixed table and seed, drawn in a fresh interpreter with another hash salt, equal
    those drawn here and the literal draw above (a seed taken from hash(), the clock or global RNG state
    would not); the gamma-0 ranks are re-derived from the uniforms of the documented streams."""
    import json

    env = {**os.environ, "PYTHONHASHSEED": "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"}
    child = json.loads(subprocess.run([sys.executable, "-c", _DRAW], env=env, capture_output=True, text=True,
                                      timeout=300, check=True).stdout)
    namespace: dict = {}
    exec(_DRAW.replace("print(json.dumps(out))", ""), namespace)
    here = json.loads(json.dumps(namespace["out"]))
    literal = [[ORDER, RANKS[name]] for name in ("hps@0", "hps@2", "random")]
    assert child == here == literal
    # The literal re-derived from the streams: the epoch orders, and the ranks from each draw's uniform.
    assert [f"p{i}" for e in (0, 1) for i in np.random.default_rng([7, e, 1]).permutation(5)] == ORDER
    uniforms = [u for e in (0, 1) for u in np.random.default_rng([7, e]).random(5)]
    assert [1 + math.floor(3 * u) for u in uniforms] == RANKS["hps@0"]
    z = math.exp(4) + math.exp(2) + 1
    assert [1 if u < math.exp(4) / z else 2 if u < (math.exp(4) + math.exp(2)) / z else 3 for u in uniforms] == RANKS["hps@2"]


def test_draws_ignore_the_global_rngs():
    """Reseeding or consuming numpy's and torch's global generators changes nothing."""
    namespace: dict = {}
    np.random.seed(123)
    torch.manual_seed(123)
    exec(_DRAW.replace("print(json.dumps(out))", ""), namespace)
    first = namespace["out"]
    np.random.random(1000)
    torch.rand(1000)
    exec(_DRAW.replace("print(json.dumps(out))", ""), namespace)
    assert namespace["out"] == first


def test_collate_pads_right_and_marks_response_tokens_by_hand():
    """Rows [5, 6 | 7] (2 prompt tokens) and [8 | 9, 10, 11] (1 prompt token), pad 0."""
    batch = collate([Encoded([5, 6, 7], 2), Encoded([8, 9, 10, 11], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 9, 10, 11]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[False, False, True, False], [False, True, True, True]]
    assert (batch["input_ids"].dtype, batch["attention_mask"].dtype, batch["response_mask"].dtype) == (
        torch.long, torch.long, torch.bool)
    assert collate([Encoded([5], 1), Encoded([1, 2], 1)], pad_id=3)["input_ids"].tolist() == [[5, 3], [1, 2]]


def test_truncation_counter_metrics_by_hand():
    from hps_core.data.encoding import TruncationCounter

    assert TruncationCounter(prompts=2, responses=1, total=9).as_metrics("hps") == {
        "hps/truncated_prompts": 2.0, "hps/truncated_responses": 1.0, "hps/examples": 9.0}


def test_encoder_caches_each_rendered_prompt_once():
    tok = WordTokenizer()
    encoder = Encoder(tok, 10, 13)
    calls = []
    render = encoder.chat.prompt_ids
    encoder.chat.prompt_ids = lambda p: calls.append(p) or render(p)
    a, b = encoder.encode(TRANSCRIPT, "Sure thing"), encoder.encode(TRANSCRIPT, "No")
    assert calls == [TRANSCRIPT] and a.input_ids[: a.n_prompt] == b.input_ids[: b.n_prompt]
    assert encoder.prompt_ids(TRANSCRIPT) == a.input_ids[: a.n_prompt] and encoder.counter.total == 2


def test_truncation_counts_accumulate_over_examples():
    """Three examples at max_prompt 6, max_length 8 (see the table above: both ends cut each time)."""
    encoder = Encoder(WordTokenizer(), 6, 8)
    for _ in range(3):
        encoder.encode(TRANSCRIPT, "Sure thing")
    assert (encoder.counter.prompts, encoder.counter.responses, encoder.counter.total) == (3, 3, 3)
