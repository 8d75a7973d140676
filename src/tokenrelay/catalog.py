"""Providers known by name: found in the environment by their usual key variables.

Each entry lists a few current models for ``/v1/models``; any other model name under
the provider's prefix is passed through to it as well.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KnownProvider:
    name: str
    protocol: str
    base_url: str
    key_vars: tuple[str, ...]
    models: tuple[str, ...]
    base_url_var: str | None = None  # an environment variable that overrides base_url


ENV_PROVIDERS: tuple[KnownProvider, ...] = (
    KnownProvider(
        "anthropic",
        "anthropic",
        "https://api.anthropic.com/v1",
        ("ANTHROPIC_API_KEY",),
        ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"),
        "ANTHROPIC_BASE_URL",
    ),
    KnownProvider(
        "gemini",
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
        "GEMINI_BASE_URL",
    ),
    KnownProvider(
        "openai",
        "openai",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        ("gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "o4-mini", "gpt-5", "gpt-5-mini"),
        "OPENAI_BASE_URL",
    ),
    KnownProvider(
        "deepseek",
        "openai",
        "https://api.deepseek.com/v1",
        ("DEEPSEEK_API_KEY",),
        ("deepseek-chat", "deepseek-reasoner"),
        "DEEPSEEK_BASE_URL",
    ),
    KnownProvider(
        "openrouter",
        "openai",
        "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY",),
        (),
    ),
    KnownProvider(
        "groq",
        "openai",
        "https://api.groq.com/openai/v1",
        ("GROQ_API_KEY",),
        ("llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
    ),
    KnownProvider(
        "mistral",
        "openai",
        "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",),
        ("mistral-large-latest", "mistral-small-latest"),
    ),
    KnownProvider(
        "xai", "openai", "https://api.x.ai/v1", ("XAI_API_KEY",), ("grok-4", "grok-3-mini")
    ),
    KnownProvider(
        "together",
        "openai",
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY",),
        (),
    ),
    KnownProvider(
        "moonshot",
        "openai",
        "https://api.moonshot.ai/v1",
        ("MOONSHOT_API_KEY",),
        ("kimi-k2-0905-preview",),
    ),
    KnownProvider(
        "qwen",
        "openai",
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        ("DASHSCOPE_API_KEY",),
        ("qwen-max", "qwen-plus", "qwen-turbo"),
    ),
    KnownProvider(
        "ollama",
        "openai",
        "http://127.0.0.1:11434/v1",
        ("OLLAMA_API_KEY",),
        (),
        "OLLAMA_BASE_URL",
    ),
)
