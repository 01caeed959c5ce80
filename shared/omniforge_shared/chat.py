"""Chat templates: how a list of messages becomes the prompt a text model continues.

A text bundle's manifest carries its template (`chat.template`, Jinja as in Hugging Face
tokenizer configs, run in a sandbox) and the strings that end an assistant turn
(`chat.stop`). Bundles exported before templates existed get DEFAULT_TEMPLATE.
"""
from __future__ import annotations

from functools import lru_cache

ROLES = ("system", "user", "assistant")

# a plain transcript: the model continues after "Assistant:" and a new "User:" line ends its turn
DEFAULT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}User: {{ m.content }}\n"
    "{% else %}Assistant: {{ m.content }}\n{% endif %}"
    "{% endfor %}"
    "Assistant:")
DEFAULT_STOP = ("\nUser:", "\nAssistant:")


class InvalidChat(ValueError):
    """The messages cannot be rendered; the message says what to send instead."""


def chat_spec(manifest: dict) -> tuple[str, tuple[str, ...]]:
    """(template, stop strings) of a bundle's manifest, or the defaults."""
    chat = manifest.get("chat") or {}
    return chat.get("template", DEFAULT_TEMPLATE), tuple(chat.get("stop", DEFAULT_STOP))


@lru_cache(maxsize=16)
def _compiled(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(keep_trailing_newline=True).from_string(template)


def render_chat(template: str, messages: list[dict[str, str]]) -> str:
    """The prompt for `messages` ([{"role", "content"}, ...]): roles system, user, assistant."""
    if not messages:
        raise InvalidChat("messages is empty; send at least one {\"role\": \"user\", \"content\": ...}")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise InvalidChat(f"messages[{i}].role is {m['role']!r}; send one of {', '.join(ROLES)}")
    return _compiled(template).render(messages=messages)
