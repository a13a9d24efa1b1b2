"""The embedded default dataset: a deterministic, generated "assistant world" of scored responses.

No downloads: ``generate_world(seed)`` builds the same records on every machine, so the default pipeline
(``python flows/hps_flow.py run``) works on a laptop. Texts are short and templated (prompts <= 18 words,
responses <= 30 words, a few hundred distinct words) so a few-million-parameter model learns them on CPU.

Each record has the "scored multi-response" shape of the reference HPS code plus our extras::

    {"prompt": str, "responses": [str, ...], "rewards": [float, ...], "is_harmful": [bool, ...],
     "category": "benign" | "unsafe", "topic": str}

About 30 % of prompts are unsafe. Oracle scores are a tier base (``synthetic_templates``) plus seeded
uniform noise of +-0.1, rounded to 4 decimals:

* benign: ideal helpful answer 5.0 > shorter good answers 4.0/3.9 > one-step answers 3.1/3.0 > vague
  ~2.0 > off-topic ~1.2 > needless refusal ~0.6 > rude ~0.0;
* unsafe: safe refusal with a redirect 5.0 > polite on-topic harmful compliance 4.5/4.3 (is_harmful,
  the "hard" negatives HPS is about: a reward model fooled by politeness) > plain refusals ~3.4 >
  lecture ~2.5 > off-topic 1.2 > rude 0.8 > blunt harmful compliance ~0.25 (is_harmful).

Groups of up to 12 responses draw from these core tiers; larger ones (up to 16, the paper's largest n)
add extra tiers in between, so the worlds of earlier versions are unchanged.

Invariants (tested): the top response of every group is never harmful and strictly the highest; every
unsafe group holds at least one hard harmful response; texts within a group are distinct; prompts are
distinct. Responses are shuffled within a group, so the best is not always first.

Chat format used everywhere (SFT, preference training, generation): ``format_prompt(prompt)`` gives
``"User: {prompt}\\nAssistant:"`` and a response is appended with ONE leading space
(``format_example(prompt, response)``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import random
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from hps_core.data.synthetic_templates import (
    BENIGN_EXTRA_RESPONSES,
    BENIGN_RESPONSES,
    BENIGN_TOPICS,
    PROMPT_FRAMES,
    QUALIFIERS,
    SCORE_NOISE,
    UNSAFE_EXTRA_RESPONSES,
    UNSAFE_RESPONSES,
    UNSAFE_SHARE,
    UNSAFE_TOPICS,
    second_person,
)

RESPONSE_SEPARATOR = " "
MAX_RESPONSES_PER_PROMPT = min(len(BENIGN_RESPONSES) + len(BENIGN_EXTRA_RESPONSES),
                               len(UNSAFE_RESPONSES) + len(UNSAFE_EXTRA_RESPONSES))


def _tiers(category: str, k: int) -> tuple[tuple[str, float, bool, str], ...]:
    """The response tiers a group of ``k`` draws from: the core tiers, plus only as many extra tiers as
    ``k`` needs beyond them (so worlds of up to 12 responses per prompt never change)."""
    core, extra = ((BENIGN_RESPONSES, BENIGN_EXTRA_RESPONSES) if category == "benign"
                   else (UNSAFE_RESPONSES, UNSAFE_EXTRA_RESPONSES))
    return core + extra[:max(0, k - len(core))]


def format_prompt(prompt: str) -> str:
    """The chat text a response is appended to: ``"User: {prompt}\\nAssistant:"``."""
    return f"User: {prompt}\nAssistant:"


def format_example(prompt: str, response: str) -> str:
    """Prompt and response in the chat format; the response follows ``format_prompt`` after one space."""
    return format_prompt(prompt) + RESPONSE_SEPARATOR + response


def _prompt_texts(tasks: Iterable[str]) -> list[tuple[str, str]]:
    """(task, prompt text) for every frame and qualifier, in a fixed order."""
    return [(task, frame.format(task=task, qual=qual)) for task in tasks for frame in PROMPT_FRAMES
            for qual in QUALIFIERS]


def _prompt_pool(category: str) -> list[tuple[str, str, str]]:
    """Every (topic, task, prompt) the templates can make for a category, in a fixed order."""
    topics = BENIGN_TOPICS if category == "benign" else UNSAFE_TOPICS
    return [(topic, task, prompt) for topic, spec in topics.items() for task, prompt in _prompt_texts(spec[0])]


def _n_unsafe(n_prompts: int) -> int:
    return math.floor(n_prompts * UNSAFE_SHARE + 0.5)


def max_prompts() -> int:
    """The largest ``n_prompts`` the templates can fill with distinct prompts at the fixed unsafe share."""
    n_benign, n_unsafe = len(_prompt_pool("benign")), len(_prompt_pool("unsafe"))
    best = 0
    for n in range(1, n_benign + n_unsafe + 1):
        if _n_unsafe(n) <= n_unsafe and n - _n_unsafe(n) <= n_benign:
            best = n
    return best


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def _validate(seed: int, n_prompts: int, responses_per_prompt: int) -> None:
    _check_int("seed", seed)
    _check_int("n_prompts", n_prompts)
    _check_int("responses_per_prompt", responses_per_prompt)
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    if not 2 <= responses_per_prompt <= MAX_RESPONSES_PER_PROMPT:
        raise ValueError(
            f"responses_per_prompt must be between 2 and {MAX_RESPONSES_PER_PROMPT} (the number of distinct "
            f"responses the templates supply per prompt), got {responses_per_prompt}"
        )
    limit = max_prompts()
    if n_prompts > limit:
        raise ValueError(
            f"n_prompts={n_prompts} exceeds the maximum of {limit} distinct prompts the synthetic templates can "
            f"make; use n_prompts <= {limit} or real data through a config file"
        )


def _slots(rng: random.Random, category: str, topic: str, task: str) -> dict[str, str]:
    """The per-prompt template fields (steps shuffled, an off-topic benign topic, a redirect)."""
    slots = {"task": second_person(task)}
    if category == "benign":
        steps = rng.sample(BENIGN_TOPICS[topic][1], k=5)
        slots.update({f"s{i}": s for i, s in enumerate(steps)})
    else:
        _, harm_steps, redirects = UNSAFE_TOPICS[topic]
        slots.update({f"h{i}": s for i, s in enumerate(rng.sample(harm_steps, k=5))})
        slots["r"] = rng.choice(redirects)
    other = rng.choice(sorted(t for t in BENIGN_TOPICS if t != topic))
    slots.update({f"o{i}": s for i, s in enumerate(rng.sample(BENIGN_TOPICS[other][1], k=3))})
    return slots


def _group(rng: random.Random, category: str, topic: str, task: str, prompt: str, k: int) -> dict:
    """One scored group: the ideal (+ one hard harmful when unsafe), the rest sampled, then shuffled."""
    tiers = _tiers(category, k)
    slots = _slots(rng, category, topic, task)
    chosen = [0]
    if category == "unsafe":
        chosen.append(rng.choice([i for i, t in enumerate(tiers) if t[0] == "hard_harmful"]))
    rest = [i for i in range(1, len(tiers)) if i not in chosen]
    chosen += rng.sample(rest, k=k - len(chosen))
    rng.shuffle(chosen)
    responses, rewards, harmful = [], [], []
    for i in chosen:
        _, base, is_harmful, template = tiers[i]
        responses.append(template.format(**slots))
        rewards.append(round(base + rng.uniform(-SCORE_NOISE, SCORE_NOISE), 4))
        harmful.append(is_harmful)
    record = {"prompt": prompt, "responses": responses, "rewards": rewards, "is_harmful": harmful,
              "category": category, "topic": topic}
    _check_group(record)
    return record


def _check_group(record: dict) -> None:
    """Fail loudly if a template edit breaks an invariant the pipeline and the tests rely on."""
    rewards, responses = record["rewards"], record["responses"]
    top = max(range(len(rewards)), key=rewards.__getitem__)
    if len(set(responses)) != len(responses):
        raise AssertionError(f"duplicate responses in the group of {record['prompt']!r}")
    if record["is_harmful"][top] or sorted(rewards)[-2] >= rewards[top]:
        raise AssertionError(f"top response of {record['prompt']!r} is harmful or tied")


def generate_world(seed: int = 0, n_prompts: int = 300, responses_per_prompt: int = 8) -> list[dict]:
    """Generate ``n_prompts`` scored groups of ``responses_per_prompt`` responses, deterministically from
    ``seed`` (a private ``random.Random``; the global RNG is never touched)."""
    _validate(seed, n_prompts, responses_per_prompt)
    seed, n_prompts, responses_per_prompt = int(seed), int(n_prompts), int(responses_per_prompt)
    rng = random.Random(seed)
    n_unsafe = _n_unsafe(n_prompts)
    picked = []
    for category, count in (("benign", n_prompts - n_unsafe), ("unsafe", n_unsafe)):
        pool = _prompt_pool(category)
        picked += [(category, *item) for item in rng.sample(pool, k=count)]
    rng.shuffle(picked)
    records = [_group(rng, category, topic, task, prompt, responses_per_prompt)
               for category, topic, task, prompt in picked]
    if len({r["prompt"] for r in records}) != len(records):
        raise AssertionError("duplicate prompt texts generated; the prompt templates overlap")
    return records


def world_to_jsonl(records: Iterable[dict]) -> str:
    """Deterministic JSONL text of records (sorted keys, UTF-8 characters kept, trailing newline)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)


def write_world_jsonl(path: str | os.PathLike, seed: int = 0, n_prompts: int = 300,
                      responses_per_prompt: int = 8) -> Path:
    """Write the generated world as JSONL to ``path`` atomically (temp file in the same folder, then
    ``os.replace``); the bytes depend only on the arguments. Returns the path."""
    path = Path(path)
    data = world_to_jsonl(generate_world(seed, n_prompts, responses_per_prompt)).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the dataset is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def world_corpus(records: Iterable[dict]) -> Iterator[str]:
    """Every prompt and response text of the records, in order (tokenizer training input)."""
    for record in records:
        yield record["prompt"]
        yield from record["responses"]
