"""The pure parts behind agents on the Anthropic wire: the per-provider beta filter,
``toolu_`` ids, and the rewording of other upstreams' context-length errors."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tokenrelay.events import Error, GatewayError
from tokenrelay.protocols.anthropic import codec as anthropic
from tokenrelay.protocols.anthropic.errors import context_message
from tokenrelay.protocols.anthropic.wire import tool_use_id
from tokenrelay.providers.betas import BetaFilter

flags = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


@given(st.lists(flags, max_size=8), st.lists(flags, max_size=4))
def test_a_listed_filter_keeps_exactly_the_accepted_flags_in_order(
    sent: list[str], accepted: list[str]
) -> None:
    beta = BetaFilter(accepted, "https://bedrock.example/v1")
    kept = beta.value(" , ".join(sent))
    expected = [f for f in sent if f in accepted]
    assert kept == (",".join(expected) or None)
    headers = beta.headers({"Anthropic-Beta": ",".join(sent), "x-other": "1"})
    assert headers.get("Anthropic-Beta") == (",".join(expected) or None)
    assert headers["x-other"] == "1"


def test_defaults_and_prefixes() -> None:
    assert BetaFilter(None, "https://api.anthropic.com/v1").value("a,b") == "a,b"
    assert BetaFilter(None, "https://my-proxy.example/v1").value("a,b") is None
    assert BetaFilter(["*"], "http://127.0.0.1:1/v1").value("x-1") == "x-1"
    prefix = BetaFilter(["effort-*", "context-1m-2025-08-07"], "https://vertex.example")
    assert prefix.value("effort-2025-11-24,new-2027,context-1m-2025-08-07") == (
        "effort-2025-11-24,context-1m-2025-08-07"
    )
    assert BetaFilter([], "https://api.anthropic.com").value("a") is None


@given(st.none() | st.text(max_size=40))
def test_tool_use_ids_look_like_anthropics(upstream: str | None) -> None:
    made = tool_use_id(upstream)
    assert re.fullmatch(r"toolu_[A-Za-z0-9_-]+", made)
    assert tool_use_id(made) == made  # an Anthropic id (or one made here) is kept
    if upstream and re.fullmatch(r"[A-Za-z0-9_-]+", upstream):
        assert made.endswith(upstream)  # the upstream's id is still readable in it


REAL_WORDINGS = [
    (  # OpenAI
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130511 tokens. Please reduce the length of the messages.",
        "prompt is too long: 130511 tokens > 128000 maximum",
    ),
    (  # vLLM
        None,
        "This model's maximum context length is 32768 tokens. However, you requested "
        "40000 tokens (39000 in the messages, 1000 in the completion).",
        "prompt is too long: 40000 tokens > 32768 maximum",
    ),
    (  # Gemini
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        "prompt is too long: 1200000 tokens > 1048576 maximum",
    ),
    (  # a wording without numbers
        "context_length_exceeded",
        "Input is longer than the context window.",
        "prompt is too long: Input is longer than the context window.",
    ),
]


def test_context_length_errors_in_anthropics_words() -> None:
    for code, message, worded in REAL_WORDINGS:
        assert context_message(code, message) == worded
        body = anthropic.error_body(GatewayError("invalid_request", message, 400, code))
        assert body == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": worded},
        }
        frame = anthropic.error_frame(Error("invalid_request", message, 400, code))
        assert worded.encode() in frame
    # not a context error, or already Anthropic's: unchanged
    assert context_message(None, "messages: field required") is None
    assert context_message("invalid_request_error", "prompt is too long: 3 > 2") is None
    plain = GatewayError("rate_limit", "maximum context length is 5 tokens", 429)
    assert anthropic.error_body(plain)["error"]["message"] == plain.message
