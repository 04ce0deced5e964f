"""The decode loop (KV cache, continuous batching) against the full-recompute loop, on the zoo's text
models: the same text token for token, seeds per stream, streams joining, leaving and cancelled, the
window policy, and the cache's logits against the plain graph's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.metrics import Metrics
from service.runtime.decode_loop import DecodeStream
from service.runtime.generation import Generation, GenerationParams, GenerationResult
from service.runtime.kv_cache import CacheBatch, Memory
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository
from service.runtime.sampling import SamplingParams
from service.runtime.scan import scan
from service.runtime.session import SessionConfig
from tests.helpers.servers import MODELS
from tests.helpers.zoo import DATES, GPT, manifest, model_dir, require_models

METRICS = Metrics()
SAMPLING = ("temperature", "top_k", "top_p", "seed")
SOURCES = ("March 3, 2021", "3/4/1999", "Sunday 12 October 1975", "2004-02-29")


def load(name: str) -> LoadedModel:
    require_models(name)
    if "kv_cache" not in manifest(name):
        pytest.skip(f"{name}'s model.json lists no KV-cache graphs")
    repository = Repository(MODELS, SessionConfig(), METRICS)
    model = repository.load_version(scan(MODELS, repository.hasher, [name])[name][-1])
    assert model.ready and model.decoder is not None, model.reason
    return model


@pytest.fixture(scope="module")
def gpt() -> LoadedModel:
    return load(GPT)


@pytest.fixture(scope="module")
def dates() -> LoadedModel:
    return load(DATES)


def prepare(model: LoadedModel, prompt: str, **params: Any) -> Generation:
    """A checked generation, as the generate endpoint prepares one."""
    sampling = SamplingParams(**{k: v for k, v in params.items() if k in SAMPLING})
    rest = {k: v for k, v in params.items() if k not in SAMPLING}
    assert model.text is not None
    return model.text.prepare(prompt, GenerationParams(sampling=sampling, **rest), max_prompt_length=4096)


async def decode_all(
    model: LoadedModel, generations: Sequence[Generation], cancel: int | None = None
) -> list[GenerationResult | None]:
    """Every generation through the model's decode loop at once; `cancel` is cancelled after its
    third token (None in the results)."""
    assert model.decoder is not None
    streams = [model.decoder.submit(g) for g in generations]

    async def until_third(stream: DecodeStream) -> None:
        for _ in range(3):
            await stream.next()
        stream.cancel()

    async def one(index: int, stream: DecodeStream) -> GenerationResult | None:
        if index == cancel:
            await until_third(stream)
            return None
        return await stream.result()

    return await asyncio.gather(*(one(i, s) for i, s in enumerate(streams)))


def decode(
    model: LoadedModel, generations: Sequence[Generation], cancel: int | None = None
) -> list[GenerationResult | None]:
    return asyncio.run(decode_all(model, generations, cancel))


def test_greedy_equals_the_full_recompute_loop_over_120_tokens(gpt: LoadedModel) -> None:
    (cached,) = decode(gpt, [prepare(gpt, "The ", max_tokens=120)])
    recomputed = prepare(gpt, "The ", max_tokens=120).run()
    assert cached == recomputed
    assert cached is not None and cached.tokens == 120 and cached.finish_reason == "length"


def test_the_cache_logits_match_the_plain_graph_at_every_step_in_a_padded_batch(gpt: LoadedModel) -> None:
    """Two prompts of different lengths share one left-padded batch for 120 greedy steps; each row's
    logits equal the plain graph over its whole context (1e-4)."""
    assert gpt.decoder is not None and gpt.text is not None
    graphs, tokenizer = gpt.decoder.graphs, gpt.text.tokenizer
    plain = ort.InferenceSession(str(model_dir(GPT) / "model.onnx"), providers=["CPUExecutionProvider"])
    contexts = [tokenizer.encode("The "), tokenizer.encode("Return a new list of the items")]
    batch = CacheBatch(graphs)
    for context in contexts:
        batch.append(graphs.prefill(context[:-1], None), None)
    worst = 0.0
    for _ in range(120 - len(contexts[1])):
        logits = batch.step(np.asarray([c[-1] for c in contexts], dtype=np.int64))
        for row, context in enumerate(contexts):
            (full,) = plain.run(["logits"], {"input_ids": np.asarray([context], dtype=np.int64)})
            worst = max(worst, float(np.max(np.abs(full[0, -1] - logits[row]))))
            context.append(int(np.argmax(logits[row])))
    assert worst < 1e-4
    assert batch.padding.tolist() == [0, 0] or batch.padding.min() == 0


def test_a_seeded_stream_is_the_same_alone_and_beside_seven_others(gpt: LoadedModel) -> None:
    def seeded() -> Generation:
        return prepare(gpt, "def ", max_tokens=60, temperature=0.9, top_k=20, seed=1234)

    (alone,) = decode(gpt, [seeded()])
    others = [prepare(gpt, f"{i} and ", max_tokens=20 + 7 * i, temperature=1.0, seed=i) for i in range(7)]
    together = decode(gpt, [*others[:3], seeded(), *others[3:]])
    assert together[3] == alone
    assert alone is not None and alone == seeded().run()  # and the same as the full-recompute loop
    assert observed_above(gpt, 4) > 0  # they really ran as one batch (the buckets are 1, 2, 4, 8, ...)


def observed_above(model: LoadedModel, bound: int) -> float:
    """How many decode steps of `model` ran more than `bound` streams."""

    def bucket(le: str) -> float:
        labels = {"model": model.name, "version": model.version_str, "le": le}
        value = METRICS.registry.get_sample_value("recap_generate_decode_batch_size_bucket", labels)
        return value or 0.0

    return bucket("+Inf") - bucket(f"{float(bound)}")


def test_cancelling_one_of_eight_streams_leaves_the_others_exact(gpt: LoadedModel) -> None:
    def make(i: int) -> Generation:
        return prepare(gpt, f"class {i}", max_tokens=40, temperature=0.8, seed=100 + i)

    alone = [make(i).run() for i in range(8)]
    together = decode(gpt, [make(i) for i in range(8)], cancel=2)
    assert together[2] is None
    assert [r for i, r in enumerate(together) if i != 2] == [r for i, r in enumerate(alone) if i != 2]


def test_stop_strings_eos_and_lengths_end_each_stream_as_the_recompute_loop_does(gpt: LoadedModel) -> None:
    cases: list[dict[str, Any]] = [
        {"max_tokens": 30, "stop": ("e",)},
        {"max_tokens": 1},
        {"max_tokens": 50, "temperature": 1.5, "seed": 7, "stop": ("\n\n", " the ")},
        {"max_tokens": 25, "top_p": 0.5, "temperature": 1.0, "seed": 3},
    ]
    together = decode(gpt, [prepare(gpt, "The ", **case) for case in cases])
    assert together == [prepare(gpt, "The ", **case).run() for case in cases]
    assert together[0] is not None and together[0].finish_reason == "stop"


def window_policy_reference(gpt: LoadedModel, prompt: str, max_tokens: int) -> str:
    """The documented window policy written as a full-recompute loop over the plain graph: the prompt
    is cropped to the last `window` tokens; when the context passes the window it restarts from its
    last `window // 2` tokens."""
    assert gpt.text is not None
    tokenizer, window = gpt.text.tokenizer, gpt.text.max_sequence_length
    plain = ort.InferenceSession(str(model_dir(GPT) / "model.onnx"), providers=["CPUExecutionProvider"])
    tokens = tokenizer.encode(prompt)
    start = max(len(tokens) - window, 0)
    made = []
    for _ in range(max_tokens):
        if len(tokens) - start > window:
            start = len(tokens) - window // 2
        (logits,) = plain.run(["logits"], {"input_ids": np.asarray([tokens[start:]], dtype=np.int64)})
        token = int(np.argmax(logits[0, -1]))
        tokens.append(token)
        made.append(tokenizer.token_text(token))
    return "".join(made)


def test_past_the_window_the_stream_follows_the_documented_policy(gpt: LoadedModel) -> None:
    assert gpt.text is not None and gpt.text.max_sequence_length == 128
    prompt = "Return the number of items in a container. The argument may be a sequence or a collection. "
    (cached,) = decode(gpt, [prepare(gpt, prompt, max_tokens=150)])
    assert cached is not None and cached.tokens == 150
    assert cached.text == window_policy_reference(gpt, prompt, 150)
    # Inside the window it is today's cropping exactly; the two part ways only past it.
    recomputed = prepare(gpt, prompt, max_tokens=150).run().text
    inside = 128 - len(prompt)
    assert cached.text[:inside] == recomputed[:inside]


def test_a_prompt_longer_than_the_window_is_cropped_like_the_recompute_loop(gpt: LoadedModel) -> None:
    prompt = "x = [1, 2, 3]\n" * 12  # 168 characters
    (cached,) = decode(gpt, [prepare(gpt, prompt, max_tokens=1)])
    assert cached == prepare(gpt, prompt, max_tokens=1).run()


def test_seq2seq_greedy_equals_the_full_recompute_loop_in_one_batch(dates: LoadedModel) -> None:
    together = decode(dates, [prepare(dates, s, max_tokens=20) for s in SOURCES])
    assert together == [prepare(dates, s, max_tokens=20).run() for s in SOURCES]
    assert together[0] is not None and together[0].text == "2021-03-03"


def test_seq2seq_cache_logits_match_the_plain_graph(dates: LoadedModel) -> None:
    assert dates.decoder is not None and dates.text is not None
    graphs, tokenizer = dates.decoder.graphs, dates.text.tokenizer
    plain = ort.InferenceSession(str(model_dir(DATES) / "model.onnx"), providers=["CPUExecutionProvider"])
    sources = [tokenizer.encode(s) for s in SOURCES[:2]]
    batch = CacheBatch(graphs)
    for source in sources:
        batch.append(graphs.prefill([], None), Memory.of(graphs.encode(source)))
    assert tokenizer.bos_id is not None
    targets = [[tokenizer.bos_id] for _ in sources]
    for _ in range(10):
        logits = batch.step(np.asarray([t[-1] for t in targets], dtype=np.int64))
        for row, (source, target) in enumerate(zip(sources, targets, strict=True)):
            feeds = {
                "encoder_input_ids": np.asarray([source], dtype=np.int64),
                "decoder_input_ids": np.asarray([target], dtype=np.int64),
            }
            (full,) = plain.run(["logits"], feeds)
            assert np.max(np.abs(full[0, -1] - logits[row])) < 1e-4
            target.append(int(np.argmax(logits[row])))
