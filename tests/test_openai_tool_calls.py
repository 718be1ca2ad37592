"""The OpenAI-compatible chat model offered tools (function calling), with the real ``openai`` SDK
against the emulator, which streams tool calls in OpenAI's wire format."""

from __future__ import annotations

import pytest

from harness.emulators import Fail
from harness.helpers import config_for, talk
from voiceassist import providers
from voiceassist.errors import ProviderBadResponse
from voiceassist.types import Conversation, ToolCall, ToolSpec

TRANSFER = ToolSpec("transfer_call", "Put the caller through to a person.",
                    {"type": "object", "properties": {"department": {"type": "string", "enum": ["sales", "support"]}},
                     "required": ["department"]})
HANG_UP = ToolSpec("end_call", "End the call once the caller has said goodbye.")


@pytest.fixture
def config(emulators, tmp_path):
    return config_for(emulators, tmp_path)


@pytest.fixture
def model(config):
    return providers.create_named("llm", "openai", config)


def with_tools(config, question: str, *tools: ToolSpec) -> Conversation:
    """The turn's conversation, offering exactly ``tools`` (none: none, whatever the config enables)."""
    conversation = talk(config, question)
    return Conversation(conversation.system, conversation.history, conversation.question, tools)


def test_tools_are_offered_as_functions_with_auto_choice_and_no_parallel_calls(emulators, config, model):
    list(model.act(with_tools(config, "Hello", TRANSFER, HANG_UP)))
    body = emulators["tts"].requests[-1].json()
    assert body["tools"] == [
        {"type": "function", "function": {"name": "transfer_call", "description": "Put the caller through to a person.",
                                          "parameters": dict(TRANSFER.parameters)}},
        {"type": "function", "function": {"name": "end_call",
                                          "description": "End the call once the caller has said goodbye.",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_streamed_tool_call_arrives_as_one_tool_call_with_parsed_arguments(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ToolCall("transfer_call", {"department": "sales", "urgent": True,
                                                                          "note": "wants a quote, \"today\""})
    pieces = list(model.act(with_tools(config, "Put me through to sales", TRANSFER)))
    assert pieces == [ToolCall("transfer_call", {"department": "sales", "urgent": True,
                                                 "note": "wants a quote, \"today\""})]


def test_text_said_before_a_tool_call_is_yielded_first(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ("One moment, I will put you through.",
                                                ToolCall("transfer_call", {"department": "support"}))
    pieces = list(model.act(with_tools(config, "I need help", TRANSFER)))
    assert all(isinstance(p, str) for p in pieces[:-1]) and len(pieces) > 3
    assert "".join(pieces[:-1]) == "One moment, I will put you through."
    assert pieces[-1] == ToolCall("transfer_call", {"department": "support"})


def test_only_the_first_tool_call_is_used(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: (ToolCall("transfer_call", {"department": "sales"}),
                                                ToolCall("end_call", {}))
    pieces = list(model.act(with_tools(config, "Sales please, then bye", TRANSFER, HANG_UP)))
    assert pieces == [ToolCall("transfer_call", {"department": "sales"})]


def test_tool_call_without_arguments_gives_empty_arguments(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ToolCall("end_call", {})
    assert list(model.act(with_tools(config, "Goodbye", HANG_UP))) == [ToolCall("end_call", {})]


def test_plain_text_reply_still_streams_as_text_when_tools_are_offered(emulators, config, model):
    pieces = list(model.act(with_tools(config, "Hello", TRANSFER)))
    assert len(pieces) > 3 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == "Answer 1: you asked, Hello"


def test_invalid_json_arguments_are_a_bad_response_naming_the_tool(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ToolCall("transfer_call", '{"department": "sales"')  # type: ignore[arg-type]
    with pytest.raises(ProviderBadResponse, match="transfer_call"):
        list(model.act(with_tools(config, "Sales please", TRANSFER)))
    assert len(emulators["tts"].requests) == 1  # a bad answer is not retried


def test_arguments_that_are_not_an_object_are_a_bad_response(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ToolCall("transfer_call", '["sales"]')  # type: ignore[arg-type]
    with pytest.raises(ProviderBadResponse, match="transfer_call.*not a JSON object"):
        list(model.act(with_tools(config, "Sales please", TRANSFER)))


def test_invalid_arguments_after_text_fail_mid_stream(emulators, config, model):
    emulators["tts"].chat_reply = lambda body: ("Let me see.", ToolCall("transfer_call", "{oops"))  # type: ignore[arg-type]
    stream = model.act(with_tools(config, "Sales please", TRANSFER))
    assert next(stream) == "Let"
    with pytest.raises(ProviderBadResponse, match="transfer_call"):
        list(stream)


def test_tool_call_request_is_retried_after_a_429(emulators, config, model):
    emulators["tts"].queue(Fail(429))
    emulators["tts"].chat_reply = lambda body: ToolCall("transfer_call", {"department": "sales"})
    assert list(model.act(with_tools(config, "Sales please", TRANSFER))) == [
        ToolCall("transfer_call", {"department": "sales"})]
    assert len(emulators["tts"].requests) == 2


def test_without_tools_act_is_stream_and_offers_no_tools(emulators, config, model):
    acted = list(model.act(with_tools(config, "Hello")))
    acted_body = emulators["tts"].requests[-1].json()
    streamed = list(model.stream(with_tools(config, "Hello")))
    assert acted == streamed and "".join(acted) == "Answer 1: you asked, Hello"
    assert acted_body == emulators["tts"].requests[-1].json()
    assert "tools" not in acted_body and "tool_choice" not in acted_body and "parallel_tool_calls" not in acted_body


def test_emulator_sends_tool_calls_in_openai_wire_format_without_streaming(emulators, config):
    """The non-streamed shape too, read back through the SDK's own types."""
    import openai

    emulators["tts"].chat_reply = lambda body: ToolCall("transfer_call", {"department": "sales"})
    client = openai.OpenAI(api_key="sk-test", base_url=f"{emulators['tts'].base_url}/v1", max_retries=0)
    completion = client.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": "Hi"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "transfer_call" and call.function.arguments == '{"department": "sales"}'
