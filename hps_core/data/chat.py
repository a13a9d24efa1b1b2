"""One prompt renderer: how a prompt of the canonical table becomes the text a model sees.

Every place that turns a prompt into tokens (SFT, preference training and its reference pass, the reward
model, generation, expansion, evaluation, the registered pyfunc model) goes through :class:`ChatFormat`,
so the policy and the reward model see the same text for the same example. Prompts come in three shapes:

- plain text (one user turn), as most datasets and the generated world have them;
- an HH-RLHF transcript, ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant:"``, parsed
  into alternating user/assistant messages (never wrapped a second time);
- a JSON list of ``{"role", "content"}`` messages (what :func:`hps_core.data.canonical.chat_prompt` stores
  for multi-turn conversations).

:func:`to_messages` turns each into a message list; the tokenizer's own chat template renders it with the
generation prompt added. A tokenizer without a template (the tiny default before it carried one, a base
model) gets :data:`PLAIN_CHAT_TEMPLATE`, which renders one user turn as ``"User: {prompt}\\nAssistant:"``,
the format the project has always used, so there is one code path for every model.

The text between the generation prompt and a response, and the end-of-turn text after it, are read off
the template itself (:class:`ChatFormat` renders a probe conversation once): a response is tokenised as
``response_prefix + response`` followed by the end-of-turn tokens (``<|im_end|>`` for ChatML templates,
``</s>`` for the plain one), exactly what the template would put there.

This module imports nothing outside the standard library: the registered pyfunc model bundles it as a
code file, so a served model renders prompts exactly as training did without this project installed.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# The project's template for tokenizers without one. ``{{ '\n' }}``: a literal newline (Jinja keeps text
# verbatim, and whitespace control would eat a bare newline).
PLAIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}System: {{ message['content'] }}{{ '\n' }}"
    "{%- elif message['role'] == 'user' -%}User: {{ message['content'] }}{{ '\n' }}"
    "{%- else -%}Assistant: {{ message['content'] }}{{ eos_token }}{{ '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_ROLES = ("system", "user", "assistant")
_PROBE = "\u2063hps-probe-response\u2063"  # a text no template rewrites (no spaces, no markup)


class ChatFormatError(ValueError):
    """A prompt or chat template that cannot be rendered; the message says which and why."""


def is_hh_transcript(prompt: str) -> bool:
    """An HH-RLHF style transcript: starts with a ``Human:`` turn and holds an ``Assistant:`` turn."""
    head = prompt.lstrip("\n")
    return head.startswith("Human:") and "\n\nAssistant:" in prompt


def _hh_messages(prompt: str) -> list[dict[str, str]]:
    text = prompt.lstrip("\n")
    marks = list(_HH_TURN.finditer(text))
    messages = []
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        messages.append({"role": _HH_ROLES[mark.group(1)], "content": text[mark.end():end].strip()})
    return messages


def _json_messages(prompt: str) -> list[dict[str, str]] | None:
    if not prompt.lstrip().startswith("["):
        return None
    try:
        value = json.loads(prompt)
    except ValueError:
        return None
    if not (isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value)):
        return None
    return [{"role": str(m["role"]), "content": "" if m.get("content") is None else str(m["content"])} for m in value]


def to_messages(prompt: Any) -> list[dict[str, str]]:
    """The chat messages of a prompt (plain text, HH transcript, JSON message list, or a message list),
    without the empty assistant turn a transcript ends on (the generation prompt stands for it).

    >>> to_messages("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Help me\\n\\nAssistant:")
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'Help me'}]
    >>> to_messages("How do I bake bread?")
    [{'role': 'user', 'content': 'How do I bake bread?'}]
    """
    if isinstance(prompt, (list, tuple)):
        messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in prompt]
    elif not isinstance(prompt, str):
        raise ChatFormatError(f"a prompt must be text or a list of chat messages, got {type(prompt).__name__}")
    elif is_hh_transcript(prompt):
        messages = _hh_messages(prompt)
    else:
        messages = _json_messages(prompt) or [{"role": "user", "content": prompt}]
    while messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    bad = sorted({m["role"] for m in messages} - set(_ROLES))
    if bad:
        raise ChatFormatError(f"chat messages with unknown role(s) {bad}; roles are {', '.join(_ROLES)}")
    if not messages:
        raise ChatFormatError(f"prompt {str(prompt)[:80]!r} holds no message to answer")
    return messages


def render_plain(prompt: Any, eos_token: str) -> str:
    """``prompt`` rendered by :data:`PLAIN_CHAT_TEMPLATE` with the generation prompt, without a tokenizer:
    the tiny default's tokenizer is trained on these texts before it exists."""
    return _plain_template().render(messages=to_messages(prompt), add_generation_prompt=True, eos_token=eos_token)


@functools.lru_cache(maxsize=1)
def _plain_template():
    """:data:`PLAIN_CHAT_TEMPLATE` compiled once: compiling it per prompt was most of the tiny model's
    corpus time (build_groups renders every prompt)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # transformers' own template engine

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(PLAIN_CHAT_TEMPLATE)


class ChatFormat:
    """Renders prompts and responses for one tokenizer (see the module docstring).

    ``prompt_text(prompt)``: the rendered conversation up to and including the generation prompt.
    ``response_prefix``: the text between that and a response's first character ("" for ChatML, " " for
    the plain template). ``end_text``: the end-of-turn text after a response (a special token).
    ``add_bos``: whether a BOS token must be put before the rendered text (the template does not).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one
            template = template.get("default") or next(iter(template.values()), None)
        self.template = template or PLAIN_CHAT_TEMPLATE
        probe = [{"role": "user", "content": "x"}]
        prompt = self._render(probe, add_generation_prompt=True)
        full = self._render(probe + [{"role": "assistant", "content": _PROBE}], add_generation_prompt=False)
        eos = getattr(tokenizer, "eos_token", None) or ""
        if full.startswith(prompt) and _PROBE in full[len(prompt):]:
            self.response_prefix, _, after = full[len(prompt):].partition(_PROBE)
            self.end_text = after.rstrip() or eos
        else:  # a template whose assistant turn does not extend its generation prompt: content right after it
            self.response_prefix, self.end_text = "", eos
        bos = getattr(tokenizer, "bos_token", None)
        self.add_bos = bool(bos) and not prompt.startswith(bos)
        # tokenised once: every encoded response ends with them
        if self.end_text:
            self.end_ids = list(tokenizer(self.end_text, add_special_tokens=False)["input_ids"])
        else:
            self.end_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]

    def _render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except Exception as err:  # jinja errors, "roles must alternate", ...: say which conversation
            roles = "/".join(m["role"] for m in messages)
            raise ChatFormatError(f"the tokenizer's chat template could not render a {roles} conversation: "
                                  f"{type(err).__name__}: {err}") from err

    def prompt_text(self, prompt: Any) -> str:
        """The text a response is appended to: the conversation rendered with the generation prompt."""
        return self._render(to_messages(prompt), add_generation_prompt=True)

    def prompt_ids(self, prompt: Any) -> list[int]:
        ids = list(self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"])
        return [self.tokenizer.bos_token_id] + ids if self.add_bos else ids

    def response_ids(self, response: str) -> list[int]:
        """A response's tokens as the template places them: prefix + text, then the end-of-turn tokens."""
        ids = list(self.tokenizer(self.response_prefix + response, add_special_tokens=False)["input_ids"])
        return ids + self.end_ids

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generated turn: the end-of-turn token (when it is one token) and EOS."""
        ends = self.end_ids
        stops = [ends[0]] if len(ends) == 1 else []
        eos = self.tokenizer.eos_token_id
        return stops + ([eos] if eos is not None and eos not in stops else [])
