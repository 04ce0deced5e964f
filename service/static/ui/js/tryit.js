// Try-it panels for the tabular models, the GAN, the date rewriter and the character-level GPT.
// `model` is the version's card (GET /ui/api/models/{m}/versions/{v}): its tensors, labels and model.json.

import { blobURL, infer, modelPath, postJSON, streamEvents } from "./api.js";
import { barChart, errorBox, h, num, rangeChart, showError } from "./dom.js";

let fieldIds = 0;
const fieldId = () => `field-${++fieldIds}`;

/** A labelled input (label, control and an optional hint, tied together by ids). */
function field(labelText, control, hint) {
  control.id ||= fieldId();
  const hintNode = hint ? h("span", { class: "hint", id: `${control.id}-hint`, text: hint }) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: control.id, text: labelText }), control, hintNode);
}

async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

// -- tabular: a form of raw features, probabilities as bars or a prediction within the data's range --

export function tabularPanel(container, model, example) {
  const width = model.inputs[0].shape.at(-1);
  const names = model.model_json?.feature_names ?? Array.from({ length: width }, (_, i) => `feature ${i}`);
  const start = example?.features ?? Array(width).fill(0);
  const inputs = names.map((name, i) =>
    h("input", {
      type: "number",
      step: "any",
      required: true,
      name,
      value: String(start[i]),
      inputmode: "decimal",
    }),
  );
  const result = h("div", { "aria-live": "polite", id: "tabular-result" });
  const regression = model.task === "regression";
  const submit = h("button", { type: "submit", class: "primary", text: "Predict" });
  const form = h(
    "form",
    { class: "tryit", id: "tabular-form" },
    h(
      "fieldset",
      {},
      h("legend", { text: "Raw features" }),
      h(
        "div",
        { class: "fields" },
        names.map((name, i) => field(name, inputs[i])),
      ),
    ),
    h(
      "div",
      { class: "actions" },
      submit,
      h("button", {
        type: "button",
        text: "Back to the example",
        onclick: () =>
          inputs.forEach((input, i) => {
            input.value = String(start[i]);
          }),
      }),
      example
        ? h("span", {
            class: "hint",
            text: `Prefilled with row ${example.row} of ${example.dataset} (true answer: ${example.target}).`,
          })
        : null,
    ),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = inputs.map((input) => Number(input.value));
    const bad = inputs.find((input, i) => input.value.trim() === "" || !Number.isFinite(values[i]));
    if (bad) {
      showError(result, new Error(`“${bad.name}” needs a number.`));
      bad.focus();
      return;
    }
    const output = regression ? "prediction" : "probabilities";
    const tensors = [{ name: model.inputs[0].name, datatype: "FP32", shape: [1, width], data: values }];
    await busy(submit, async () => {
      try {
        const answer = (await infer(model.name, model.version, tensors, [{ name: output }]))[output];
        result.replaceChildren(
          regression ? regressionChart(answer[0], example) : probabilityChart(model, answer),
        );
      } catch (error) {
        showError(result, error);
      }
    });
  });
  container.replaceChildren(form);
}

function probabilityChart(model, values) {
  const labels = model.labels ?? values.map((_, i) => String(i));
  const bars =
    values.length === 1 // a binary classifier answers P(labels[1])
      ? [
          { label: labels[0], value: 1 - values[0] },
          { label: labels[1], value: values[0] },
        ]
      : values.map((value, i) => ({ label: labels[i], value }));
  return barChart({ title: `${model.name}: probabilities`, bars });
}

function regressionChart(value, example) {
  const [low, high] = example?.target_range ?? [Math.min(0, value), Math.max(1, value)];
  const truth = example ? ` The example row's true value is ${num(example.target)}.` : "";
  return rangeChart({
    title: `Prediction: ${num(value)}`,
    value,
    low,
    high,
    note: `Against the dataset's targets, ${num(low)} to ${num(high)}.${truth}`,
  });
}

// -- the GAN: a sheet of samples for a seed --

export function ganPanel(container, model) {
  const seed = h("input", { type: "number", min: "0", step: "1", value: "7", required: true });
  const count = h(
    "select",
    {},
    [16, 36, 64].map((n) => h("option", { value: String(n), text: String(n) })),
  );
  const figure = h("figure", { id: "gan-sheet", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", text: "Draw samples" });
  let url = null;
  const form = h(
    "form",
    { class: "tryit" },
    h("div", { class: "controls" }, field("Seed", seed, "Same seed, same sheet"), field("Images", count)),
    h(
      "div",
      { class: "actions" },
      submit,
      h("button", {
        type: "button",
        text: "New seed",
        onclick: () => {
          seed.value = String(Math.floor(Math.random() * 1e6));
          form.requestSubmit();
        },
      }),
    ),
    figure,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = `?count=${count.value}&seed=${encodeURIComponent(seed.value)}&scale=8`;
    await busy(submit, async () => {
      try {
        const next = await blobURL(
          `/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}/samples.png${query}`,
        );
        if (url) URL.revokeObjectURL(url);
        url = next;
        const alt = `${count.value} digits drawn by ${model.name} from seed ${seed.value}`;
        figure.replaceChildren(
          h("img", { src: url, alt, class: "pixelated" }),
          h("figcaption", { text: `${alt}; each 8x8 image drawn 8 times larger.` }),
        );
      } catch (error) {
        showError(figure, error);
      }
    });
  });
  container.replaceChildren(form);
  form.requestSubmit();
}

// -- dates-seq2seq: a human date in, the ISO date out --

export function datesPanel(container, model) {
  const examples = (model.model_json?.split?.test_examples ?? []).slice(0, 4);
  const held = new Map(examples); // human -> ISO, from the held-out split
  const text = h("input", {
    type: "text",
    id: fieldId(),
    value: examples[0]?.[0] ?? "the 3rd of March 2021",
    required: true,
    autocomplete: "off",
  });
  const answer = h("output", { class: "answer", id: "date-answer", "aria-live": "polite", for: text.id });
  const note = h("p", { class: "hint", role: "status" });
  const submit = h("button", { type: "submit", class: "primary", text: "To ISO" });
  const form = h(
    "form",
    { class: "tryit" },
    field("A date, written any way", text, "Greedy decoding from the encoder-decoder Transformer"),
    h(
      "div",
      { class: "actions" },
      submit,
      examples.length ? h("span", { class: "hint", text: "Held-out examples:" }) : null,
      examples.map(([human]) =>
        h("button", {
          type: "button",
          text: human,
          onclick: () => {
            text.value = human;
            form.requestSubmit();
          },
        }),
      ),
    ),
    answer,
    note,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await busy(submit, async () => {
      try {
        const result = await postJSON(`${modelPath(model.name, model.version)}/generate`, {
          text_input: text.value,
          parameters: { max_tokens: 16 },
        });
        answer.textContent = result.text_output;
        const iso = /^\d{4}-\d{2}-\d{2}$/.test(result.text_output);
        const known = held.get(text.value);
        const check = known
          ? ` The held-out answer is ${known}: ${known === result.text_output ? "right" : "wrong"}.`
          : "";
        note.textContent = `${iso ? "An ISO date" : "Not an ISO date"}; ${result.tokens} tokens, finish reason “${result.finish_reason}”.${check}`;
      } catch (error) {
        answer.textContent = "";
        note.replaceChildren(errorBox(error));
      }
    });
  });
  container.replaceChildren(form);
}

// -- pydoc-gpt: streamed text, then the next character's top-k --

const shown = (token) => ({ " ": "space", "\n": "newline", "\t": "tab" })[token] ?? token;

export function gptPanel(container, model) {
  const vocab = model.model_json?.tokenizer?.vocab ?? [];
  const specials = new Set(Object.values(model.model_json?.tokenizer?.special_tokens ?? {}));
  const ids = new Map(
    vocab.map((token, id) => [token, id]).filter(([token, id]) => token.length === 1 && !specials.has(id)),
  );
  const span = model.model_json?.max_sequence_length ?? 128;
  const prompt = h("textarea", { rows: "3", required: true, spellcheck: "false" }, "The ");
  const controls = {
    max_tokens: h("input", { type: "number", min: "1", max: "512", step: "1", value: "120" }),
    temperature: h("input", { type: "number", min: "0", max: "2", step: "0.1", value: "0.8" }),
    top_k: h("input", { type: "number", min: "0", max: String(vocab.length || 100), step: "1", value: "20" }),
    top_p: h("input", { type: "number", min: "0.01", max: "1", step: "0.01", value: "1" }),
    seed: h("input", { type: "number", min: "0", step: "1", placeholder: "random" }),
  };
  const text = h("output", { class: "stream", id: "gpt-output" });
  const note = h("p", { class: "hint", role: "status", id: "gpt-status" });
  const topk = h("div", { id: "gpt-topk", "aria-live": "polite" });
  const generate = h("button", { type: "submit", class: "primary", text: "Generate" });
  const stop = h("button", { type: "button", text: "Stop", disabled: true });
  const next = h("button", { type: "button", text: "Next-character odds" });
  let running = null;
  const form = h(
    "form",
    { class: "tryit" },
    field("Prompt", prompt, `The model reads the last ${span} characters`),
    h(
      "fieldset",
      {},
      h("legend", { text: "Sampling" }),
      h(
        "div",
        { class: "controls" },
        field("Max tokens", controls.max_tokens),
        field("Temperature", controls.temperature, "0: greedy"),
        field("Top-k", controls.top_k, "0: off"),
        field("Top-p", controls.top_p, "1: off"),
        field("Seed", controls.seed, "Same seed, same text"),
      ),
    ),
    h("div", { class: "actions" }, generate, stop, next),
    h("div", {}, h("h3", { text: "Generated text" }), text),
    note,
    topk,
  );

  const nextOdds = async (context) => {
    const unknown = [...new Set([...context].filter((c) => !ids.has(c)))];
    if (unknown.length) {
      showError(
        topk,
        new Error(
          `Not in the vocabulary: ${unknown
            .slice(0, 5)
            .map((c) => JSON.stringify(c))
            .join(", ")}`,
        ),
      );
      return;
    }
    const tail = [...context].slice(-span).map((c) => ids.get(c));
    const tensors = [{ name: model.inputs[0].name, datatype: "INT64", shape: [1, tail.length], data: tail }];
    try {
      const top = (
        await infer(model.name, model.version, tensors, [
          { name: "logits", parameters: { classification: 10 } },
        ])
      ).logits;
      const bars = top.map((entry) => {
        const [p, , ...rest] = entry.split(":"); // "probability:token_id:character"; the character may be ":"
        return { label: shown(rest.join(":")), value: Number(p) };
      });
      topk.replaceChildren(
        barChart({ title: "The next character: top 10", bars, note: `After “…${context.slice(-20)}”` }),
      );
    } catch (error) {
      showError(topk, error);
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const parameters = {};
    for (const [name, input] of Object.entries(controls)) {
      if (input.value.trim() !== "")
        parameters[name] =
          name === "temperature" || name === "top_p" ? Number(input.value) : Math.trunc(Number(input.value));
    }
    running = new AbortController();
    generate.disabled = true;
    stop.disabled = false;
    text.textContent = "";
    topk.replaceChildren();
    note.textContent = "Streaming…";
    let tokens = 0;
    let finish = null;
    const typist = new Typist(text);
    try {
      await streamEvents(
        `${modelPath(model.name, model.version)}/generate_stream`,
        { text_input: prompt.value, parameters },
        (event) => {
          if (event.text_output) typist.push(event.text_output);
          if (event.finish_reason) finish = event;
          else {
            tokens += 1;
            note.textContent = `Streaming… ${tokens} tokens`;
          }
        },
        running.signal,
      );
      await typist.drained();
      if (finish) {
        note.textContent = `Done: ${finish.tokens} tokens, finish reason “${finish.finish_reason}”.`;
      }
      await nextOdds(prompt.value + text.textContent);
    } catch (error) {
      typist.flush();
      if (error.name === "AbortError") note.textContent = `Stopped after ${tokens} tokens.`;
      else note.replaceChildren(errorBox(error));
    } finally {
      generate.disabled = false;
      stop.disabled = true;
      running = null;
    }
  });
  stop.addEventListener("click", () => running?.abort());
  next.addEventListener("click", () => nextOdds(prompt.value + text.textContent));
  container.replaceChildren(form);
}

/**
 * Shows streamed text a piece per animation frame, the way it was generated. The server can make
 * tokens faster than a screen refreshes (a few hundred microseconds each with the KV cache), so many
 * arrive in one network read; appended at once they would land in a single frame. A backlog is
 * caught up within about eight frames: each frame shows an eighth of what waits, at least one piece.
 */
class Typist {
  constructor(target) {
    this.target = target;
    this.queue = [];
    this.waiters = [];
    this.frame = null;
  }

  push(piece) {
    this.queue.push(piece);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.show());
  }

  show() {
    this.frame = null;
    const count = Math.max(1, Math.ceil(this.queue.length / 8));
    this.target.append(this.queue.splice(0, count).join("")); // one text node per frame
    if (this.queue.length) this.frame = requestAnimationFrame(() => this.show());
    else this.waiters.splice(0).forEach((resolve) => resolve());
  }

  /** Resolves once every piece pushed so far is on the page. */
  drained() {
    if (!this.queue.length && this.frame === null) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Shows what waits at once (the stream failed or was stopped). */
  flush() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    if (this.queue.length) this.target.append(this.queue.splice(0).join(""));
    this.waiters.splice(0).forEach((resolve) => resolve());
  }
}
