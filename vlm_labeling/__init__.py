"""VLM labelling: ask an OpenAI-compatible vision-language model which mode the player is in.

    from vlm_labeling import AnswerCache, ClientConfig, LabelRequest, VLMClient

    client = VLMClient(ClientConfig(base_url="http://127.0.0.1:11434/v1", model="qwen2.5vl:7b"),
                       cache=AnswerCache("data/vlm_cache"))
    result = client.label(LabelRequest(key_frame=frame_bgr, context_frames=[older_bgr],
                                       hud={"hp_frac": 0.4}, objects=info["objects"], request_id="ep3/120"))
    if result.ok:
        result.answer.mode, result.answer.target_id

Names are imported on first use (PEP 562), so `import vlm_labeling` stays light. The modules:
docs/notes/vlm_labeling.md, "vlm_labeling/__init__.py".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ClientConfig": "vlm_labeling.client_config",
    "ClientStats": "vlm_labeling.client",
    "VLMClient": "vlm_labeling.client",
    "AnswerCache": "vlm_labeling.cache",
    "cache_key": "vlm_labeling.cache",
    "LabelRequest": "vlm_labeling.records",
    "LabelResult": "vlm_labeling.records",
    "TrackedObject": "vlm_labeling.records",
    "Usage": "vlm_labeling.records",
    "MODES": "vlm_labeling.schema",
    "Answer": "vlm_labeling.schema",
    "answer_schema": "vlm_labeling.schema",
    "extract_json_object": "vlm_labeling.schema",
    "parse_answer": "vlm_labeling.schema",
    "Prompt": "vlm_labeling.prompts",
    "load_prompt": "vlm_labeling.prompts",
    "VLMError": "vlm_labeling.errors",
    "ConfigError": "vlm_labeling.errors",
    "PromptError": "vlm_labeling.errors",
    "RequestError": "vlm_labeling.errors",
    "VLMHTTPError": "vlm_labeling.errors",
    "StructuredOutputUnsupported": "vlm_labeling.errors",
    "VLMTimeout": "vlm_labeling.errors",
    "VLMConnectionError": "vlm_labeling.errors",
    "InvalidAnswer": "vlm_labeling.errors",
}

__all__ = [
    "Answer",
    "AnswerCache",
    "ClientConfig",
    "ClientStats",
    "ConfigError",
    "InvalidAnswer",
    "LabelRequest",
    "LabelResult",
    "MODES",
    "Prompt",
    "PromptError",
    "RequestError",
    "StructuredOutputUnsupported",
    "TrackedObject",
    "Usage",
    "VLMClient",
    "VLMConnectionError",
    "VLMError",
    "VLMHTTPError",
    "VLMTimeout",
    "answer_schema",
    "cache_key",
    "extract_json_object",
    "load_prompt",
    "parse_answer",
]

if TYPE_CHECKING:
    from vlm_labeling.cache import AnswerCache, cache_key
    from vlm_labeling.client import ClientStats, VLMClient
    from vlm_labeling.client_config import ClientConfig
    from vlm_labeling.errors import (
        ConfigError,
        InvalidAnswer,
        PromptError,
        RequestError,
        StructuredOutputUnsupported,
        VLMConnectionError,
        VLMError,
        VLMHTTPError,
        VLMTimeout,
    )
    from vlm_labeling.prompts import Prompt, load_prompt
    from vlm_labeling.records import LabelRequest, LabelResult, TrackedObject, Usage
    from vlm_labeling.schema import MODES, Answer, answer_schema, extract_json_object, parse_answer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlm_labeling' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
