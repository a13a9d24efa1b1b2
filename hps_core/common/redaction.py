"""Keep secrets out of everything a run writes: MLflow params, tags, text artifacts, model cards, logs.

Two rules, applied at the few places text leaves the process (``hps_core.tracking``'s params, tags, text
and dict artifacts, model descriptions; the flow's cards; the flow's stdout/stderr):

1. **By name.** A key or variable name is *secret* when one of its segments equals or ends with ``token``,
   ``secret(s)``, ``password(s)``, ``passwd``, ``passphrase`` or ``key`` (case-insensitive). Segments: the
   name split at every character that is not a letter or digit (``_ . - /`` ...) and at lower-to-upper
   case changes, so ``HF_TOKEN``,
   ``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID``, ``model.hf_token``, ``apiKey`` and ``MY_APIKEY`` are
   secret, while ``max_new_tokens`` (``tokens``), ``keys``, ``keyboard``, ``tokenizer`` and
   ``num_key_value_heads`` (``key`` followed by ``value``: the attention layout) are not. The value
   of a secret name is logged as ``***``. The rule errs on the side of masking (``pad_token_id`` and
   ``monkey`` are masked too): a masked harmless value costs a reader little, a leaked token costs a lot.
2. **By value.** The value of every environment variable with a secret name (``HF_TOKEN``,
   ``MLFLOW_TRACKING_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID``, ``AWS_SESSION_TOKEN``,
   ``MY_API_KEY``, ...), and the password of any ``scheme://user:password@host`` URL in the environment, is
   replaced by ``***`` wherever it appears in logged text. Values shorter than :data:`MIN_SECRET_LEN`
   characters are not scrubbed by value (``KEY=1`` must not turn every "1" into ``***``); their names
   are still masked. Passwords inside URLs are masked in any text, whatever their length.

The environment is read at each call, so a variable set after import is covered.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_WORDS = ("token", "secret", "secrets", "password", "passwords", "passwd", "passphrase", "key")
MIN_SECRET_LEN = 8
# Named for the record; every one of them also matches rule 1.
KNOWN_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                    "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")

_SEGMENT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # HFToken -> HF, Token; apiKey -> api, Key
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)(?=@)")


def name_segments(name: str) -> list[str]:
    return [s.lower() for s in _SEGMENT.findall(str(name))]


def is_secret_name(name: str) -> bool:
    """Rule 1: some segment of ``name`` ends with one of :data:`SECRET_WORDS` (or equals it); ``key``
    followed by ``value(s)`` is the attention layout (``num_key_value_heads``), not a secret."""
    segments = name_segments(name)
    for i, seg in enumerate(segments):
        following = segments[i + 1] if i + 1 < len(segments) else ""
        for word in SECRET_WORDS:
            if seg.endswith(word) and not (word == "key" and following in ("value", "values")):
                return True
    return False


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Rule 2: the values to scrub from text, longest first (so a secret containing another is masked whole)."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN}
    found |= {m.group("password") for v in env.values() for m in _URL_PASSWORD.finditer(v)
              if len(m.group("password")) >= MIN_SECRET_LEN}
    return sorted(found, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret value (default: :func:`secret_values`) and URL password masked."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def redact_value(name: str, value: Any, secrets: list[str] | None = None) -> Any:
    """``***`` for a non-empty value of a secret name; otherwise the value with secrets scrubbed (strings,
    and the strings inside dicts and lists); other types unchanged."""
    secrets = secret_values() if secrets is None else secrets
    if is_secret_name(name) and value not in (None, "", {}, []):
        return MASK
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [redact_value("", v, secrets) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` (nested) with both rules applied to every key and value."""
    return redact_value("", dict(mapping))


class ScrubbingStream(io.TextIOBase):
    """A text stream that masks secrets in what is written to it and passes everything else through."""

    def __init__(self, stream: Any, secrets: list[str]):
        self._stream, self._secrets = stream, secrets

    def write(self, s: Any) -> int:
        if not isinstance(s, str):  # let the wrapped stream refuse bytes as it would (click probes this)
            return self._stream.write(s)
        self._stream.write(scrub_text(s, self._secrets))
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # buffer, line_buffering, reconfigure, ...
        if name in ("_stream", "_secrets"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._stream, name)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors


def install_output_scrubbing() -> bool:
    """Wrap ``sys.stdout`` and ``sys.stderr`` so that secret values never reach the logs (Metaflow stores
    a step's stdout/stderr). A no-op when the environment holds no secret values, or when already installed.
    Returns whether the streams are wrapped. Only text written through Python is covered (not C-level writes)."""
    secrets = secret_values()
    if not secrets:
        return False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ScrubbingStream):
            setattr(sys, name, ScrubbingStream(stream, secrets))
    return True
