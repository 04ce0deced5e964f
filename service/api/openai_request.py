"""The OpenAI completions body, checked by hand: model, prompt(s) and sampling -> one Generation per choice.

The fields are read with the generate extension's checks (`service.api.generate_request`) and
validated by the runtime's (`GenerationParams`, `SamplingParams`, `TextModel.prepare`), so every rule
and message exists once. What differs is OpenAI's: its defaults (`max_tokens` 16, `temperature` 1,
where generate has 64 and greedy), `n` choices per prompt, a list of prompts, and `param` in the error
object, which names the field at fault (`FieldError`).

Choices are numbered as OpenAI numbers them: choice `p * n + j` is the j-th of prompt p. With a `seed`,
choice j of every prompt samples with `seed + j` (mod 2**63): choice 0 is what /generate answers for the
same seed, and each prompt's choices are the same whatever else the list holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.api.generate_request import (
    integer_parameter,
    json_kind,
    max_tokens_parameter,
    number_parameter,
    stop_parameter,
)
from service.api.pipeline import Body
from service.api.rest import parse_object
from service.errors import InvalidInputError, UnsupportedError
from service.runtime.generation import Generation, GenerationParams, TextModel
from service.runtime.sampling import SamplingParams
from service.settings import Settings

DEFAULT_MAX_TOKENS = 16  # OpenAI's; /generate's is --generate-default-max-tokens (64)
DEFAULT_TEMPERATURE = 1.0  # OpenAI's; /generate's is 0 (greedy)
MAX_CHOICES = 16  # prompts x n: each choice is a generation of its own
SEEDS = 2**63  # SamplingParams' seed range
FIELDS = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "stream_options"}
)
# OpenAI fields this server does not implement, taken only at the value that changes nothing (null
# always); `user` is the caller's end-user id, which changes no output.
NEUTRAL: dict[str, object] = {
    "echo": False,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": {},
    "suffix": "",
    "logprobs": None,
}
IGNORED = frozenset({"user"})


class FieldError(InvalidInputError):
    """A 400 about one request field, which OpenAI's error object names (`param`)."""

    def __init__(self, message: str, param: str | None, code: str = InvalidInputError.code) -> None:
        super().__init__(message)
        self.param = param
        self.code = code  # the metric reason of the check that failed (invalid_input, unsupported)


@contextmanager
def field(param: str) -> Iterator[None]:
    """A shared check's 400 inside this block becomes a FieldError naming `param`."""
    try:
        yield
    except FieldError:
        raise
    except InvalidInputError as error:
        raise FieldError(error.message, param, error.code) from error


@dataclass(frozen=True)
class CompletionRequest:
    prompts: tuple[str, ...]
    n: int
    params: tuple[GenerationParams, ...]  # per choice of a prompt: params[j] is choice j's (its seed)
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class Prepared:
    """Every choice's generation, in choice order, and the prompts' tokens (each prompt counted once)."""

    generations: list[Generation]
    prompt_tokens: int


def model_of(body: Body) -> tuple[str, dict[str, Any]]:
    """The model the body names, and the decoded body: the pipeline looks the model up before the rest
    of the body is checked, so a bad field counts against that model."""
    document = parse_object(body)
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise FieldError(f"'model' must be the name of a model, got {json_kind(model)}", "model")
    return model, document


def parse_completion_request(document: dict[str, Any], settings: Settings) -> CompletionRequest:
    """Check a decoded completions body against OpenAI's contract and the server's caps."""
    _check_fields(document)
    prompts = _prompts(document.get("prompt"))
    with field("n"):
        n = integer_parameter(document, "n", 1) or 0
        if n < 1:
            raise InvalidInputError(f"n must be >= 1, got {n}")
    if len(prompts) * n > MAX_CHOICES:
        raise FieldError(
            f"{len(prompts)} prompt(s) x n={n} is {len(prompts) * n} choices; this server makes at most "
            f"{MAX_CHOICES} per request",
            "n",
        )
    best_of = document.get("best_of")
    if best_of is not None and best_of != n:
        raise FieldError(
            "best_of is not supported (only null, or equal to n)", "best_of", UnsupportedError.code
        )
    with field("max_tokens"):
        default = min(DEFAULT_MAX_TOKENS, settings.generate_max_tokens)
        max_tokens = max_tokens_parameter(document, default, settings)
        GenerationParams(max_tokens=max_tokens)  # each field alone, so the error names its param
    with field("stop"):
        stop = stop_parameter(document)
        GenerationParams(stop=stop)
    with field("temperature"):
        temperature = number_parameter(document, "temperature", DEFAULT_TEMPERATURE)
        SamplingParams(temperature=temperature)
    with field("top_p"):
        top_p = number_parameter(document, "top_p", 1.0)
        SamplingParams(top_p=top_p)
    with field("seed"):
        seed = integer_parameter(document, "seed", None)
        SamplingParams(seed=seed)
    stream, include_usage = _stream(document)
    params = tuple(
        GenerationParams(
            max_tokens=max_tokens,
            stop=stop,
            sampling=SamplingParams(
                temperature=temperature, top_p=top_p, seed=None if seed is None else (seed + j) % SEEDS
            ),
        )
        for j in range(n)
    )
    return CompletionRequest(prompts, n, params, stream, include_usage)


def prepare(text: TextModel, request: CompletionRequest, settings: Settings) -> Prepared:
    """Every choice's generation, each prompt checked and encoded by the runtime's own rules."""
    generations = []
    prompt_tokens = 0
    for p, prompt in enumerate(request.prompts):
        where = "prompt" if len(request.prompts) == 1 else f"prompt[{p}]"
        for j, params in enumerate(request.params):
            try:
                generation = text.prepare(
                    prompt, params, max_prompt_length=settings.generate_max_prompt_length
                )
            except InvalidInputError as error:
                # The runtime names the prompt as generate spells it (text_input); OpenAI's is `prompt`.
                message = error.message.replace("text_input", where, 1)
                raise FieldError(message, "prompt", error.code) from error
            if j == 0:
                prompt_tokens += len(generation.prompt_ids)
            generations.append(generation)
    return Prepared(generations, prompt_tokens)


def _check_fields(document: dict[str, Any]) -> None:
    for name in sorted(document):
        if name in FIELDS or name in IGNORED or name == "best_of":
            continue
        if name not in NEUTRAL:
            raise FieldError(
                f"unknown field {name[:32]!r}; the completions body takes {', '.join(sorted(FIELDS))}", name
            )
        value, neutral = document[name], NEUTRAL[name]
        # 0.0 is as neutral as 0, but false is no number (and 0 no boolean).
        same = value == neutral and isinstance(value, bool) == isinstance(neutral, bool)
        if value is not None and not same:
            raise FieldError(
                f"{name} is not supported by this server (send null, or omit it)", name, UnsupportedError.code
            )


def _prompts(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, list) and value and all(isinstance(item, int | list) for item in value):
        raise FieldError(
            "prompt as token ids is not supported: send the text (a string, or an array of strings)",
            "prompt",
            UnsupportedError.code,
        )
    raise FieldError(
        f"'prompt' must be a string or a non-empty array of strings, got {json_kind(value)}", "prompt"
    )


def _stream(document: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = document.get("stream")
    if stream is not None and type(stream) is not bool:
        raise FieldError(f"'stream' must be a boolean, got {json_kind(stream)}", "stream")
    options = document.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise FieldError("stream_options is only allowed with stream: true", "stream_options")
    if type(options) is not dict:
        raise FieldError(f"'stream_options' must be an object, got {json_kind(options)}", "stream_options")
    unknown = sorted(set(options) - {"include_usage", "include_obfuscation"})
    if unknown:
        raise FieldError(
            f"unknown stream option {unknown[0][:32]!r}; expected include_usage", "stream_options"
        )
    include_usage = options.get("include_usage")
    if include_usage is not None and type(include_usage) is not bool:
        raise FieldError(
            f"'stream_options.include_usage' must be a boolean, got {json_kind(include_usage)}",
            "stream_options",
        )
    return True, bool(include_usage)
