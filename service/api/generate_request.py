"""The generate body, checked by hand: `{"text_input": "...", "parameters": {...}}` -> prompt + params.

Every wrong type or value is an InvalidInputError that names the parameter, says what was expected and
never echoes a long value back. Unknown parameters are refused (a typo such as "temprature" would
otherwise silently fall back to greedy decoding). The field checks are public: the OpenAI adapter
(`service.api.openai_request`) reads its fields with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import InvalidInputError
from service.runtime.generation import GenerationParams
from service.runtime.sampling import SamplingParams
from service.settings import Settings

PARAMETERS = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "timeout")


@dataclass(frozen=True)
class GenerateRequest:
    text_input: str
    params: GenerationParams
    timeout_us: int | None = None  # the client's deadline, in microseconds (Triton's spelling)


_KINDS = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}


def json_kind(value: object) -> str:
    """The JSON kind of a decoded value, with its article, for error messages."""
    return "null" if value is None else _KINDS.get(type(value), "a number")


def integer_parameter(parameters: dict[str, Any], name: str, default: int | None) -> int | None:
    value = parameters.get(name, default)
    if value is None:
        return default
    # JSON 3.0 is a whole number; bool is an int subclass in Python and must not pass.
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise InvalidInputError(f"parameter {name!r} must be an integer, got {json_kind(value)}")
    return value


def number_parameter(parameters: dict[str, Any], name: str, default: float) -> float:
    value = parameters.get(name, default)
    if value is None:
        return default
    if type(value) not in (int, float):
        raise InvalidInputError(f"parameter {name!r} must be a number, got {json_kind(value)}")
    return float(value)


def stop_parameter(parameters: dict[str, Any]) -> tuple[str, ...]:
    value = parameters.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidInputError(
        f"parameter 'stop' must be a string or an array of strings, got {json_kind(value)}"
    )


def max_tokens_parameter(parameters: dict[str, Any], default: int, settings: Settings) -> int:
    """`max_tokens` (`default` when absent or null), within this server's cap."""
    max_tokens = integer_parameter(parameters, "max_tokens", default)
    assert max_tokens is not None
    if max_tokens > settings.generate_max_tokens:
        raise InvalidInputError(
            f"max_tokens {max_tokens} is over this server's cap of {settings.generate_max_tokens}"
        )
    return max_tokens


def parse_generate_request(document: object, settings: Settings) -> GenerateRequest:
    """Check a decoded JSON body against the generate contract and the server's caps."""
    if type(document) is not dict:
        raise InvalidInputError(
            f'the body must be a JSON object {{"text_input": "...", "parameters": {{...}}}}, '
            f"got {json_kind(document)}"
        )
    extra = sorted(set(document) - {"text_input", "parameters", "id"})
    if extra:
        raise InvalidInputError(
            f"unknown field {extra[0][:32]!r}; the body takes 'text_input' and optional 'parameters'"
        )
    text = document.get("text_input")
    if not isinstance(text, str):
        raise InvalidInputError(f"'text_input' must be a string, got {json_kind(text)}")
    parameters = document.get("parameters") or {}
    if type(parameters) is not dict:
        raise InvalidInputError(f"'parameters' must be a JSON object, got {json_kind(parameters)}")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise InvalidInputError(
            f"unknown parameter {unknown[0][:32]!r}; expected some of {', '.join(PARAMETERS)}"
        )
    max_tokens = max_tokens_parameter(parameters, settings.generate_default_max_tokens, settings)
    sampling = SamplingParams(
        temperature=number_parameter(parameters, "temperature", 0.0),
        top_k=integer_parameter(parameters, "top_k", 0) or 0,
        top_p=number_parameter(parameters, "top_p", 1.0),
        seed=integer_parameter(parameters, "seed", None),
    )
    params = GenerationParams(max_tokens=max_tokens, stop=stop_parameter(parameters), sampling=sampling)
    return GenerateRequest(text, params, integer_parameter(parameters, "timeout", None))
