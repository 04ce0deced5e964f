// A model's page: its card (everything model.json says, in words), learning curve, tensors and a
// try-it panel for its task.

import { blobURL, getJSON } from "./api.js";
import { digitClassifiers, digitsPanel, isDigitClassifier } from "./digits.js";
import { h, num, showError, words } from "./dom.js";
import { comparison, headline, modelLink } from "./home.js";
import { datesPanel, ganPanel, gptPanel, tabularPanel } from "./tryit.js";

const TASKS = {
  regression: "regression model (it predicts one number)",
  binary_classification: "binary classifier (the probability of one of two classes)",
  multiclass_classification: "multiclass classifier (a probability for each class)",
  sequence_classification: "sequence classifier (it reads the image one row at a time)",
  language_model: "language model (the odds of the next character)",
  seq2seq: "sequence-to-sequence model (it rewrites one text as another)",
  generator: "generator (it draws new images from random noise)",
  discriminator: "discriminator (how likely an image is a real digit)",
};
// Shown elsewhere on the page (headline, metrics table, tensors, the image), not in the facts list.
const SHOWN = new Set([
  "name",
  "version",
  "task",
  "description",
  "recap_topic",
  "dataset",
  "inputs",
  "outputs",
  "metrics",
  "learning_curve",
]);

/** Any model.json value in words: nested objects as nested lists, long lists said to be cut. */
function describe(value, path, cuts) {
  if (value === null || value === undefined) return "none";
  if (typeof value === "number") return num(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const cut = cuts[path] ? `first ${value.length} of ${cuts[path]}: ` : "";
    if (value.every((item) => Array.isArray(item))) {
      return h(
        "ul",
        {},
        value.map((item) => h("li", { text: item.map((x) => describe(x, "", {})).join(" → ") })),
        cut ? h("li", { text: `… (${cut.slice(0, -2)})` }) : null,
      );
    }
    if (value.every((item) => item === null || typeof item !== "object")) {
      return `${cut}${value.map((item) => describe(item, "", {})).join(", ")}` || "(empty)";
    }
    return h(
      "ol",
      {},
      value.map((item, i) => h("li", {}, describe(item, `${path}[${i}]`, cuts))),
    );
  }
  return facts(Object.entries(value), path, cuts);
}

function facts(entries, path, cuts) {
  return h(
    "dl",
    { class: "facts" },
    entries.flatMap(([key, value]) => {
      const here = path ? `${path}.${key}` : key;
      return [h("dt", { text: words(key) }), h("dd", {}, describe(value, here, cuts))];
    }),
  );
}

function lead(card) {
  const json = card.model_json ?? {};
  const metric = headline(card.metrics);
  const parts = [
    h("strong", { text: card.name }),
    ` is a ${card.task ? (TASKS[card.task] ?? words(card.task)) : "model"}`,
  ];
  if (json.dataset) parts.push(`, trained on ${json.dataset}`);
  parts.push(".");
  if (metric) {
    parts.push(
      ` On its held-out test split it scores ${words(metric.name)} ${num(metric.value)}, against ${num(metric.baseline)} for ${metric.baselineName} on the same split: `,
      comparison(metric),
      ".",
    );
  }
  return h("p", {}, ...parts);
}

function metricsTable(metrics) {
  const test = metrics?.test ?? {};
  const baseline = metrics?.baseline ?? {};
  const names = Object.keys(test).filter((name) => typeof test[name] === "number");
  if (!names.length) return h("p", { class: "muted", text: "model.json records no test metrics." });
  return h(
    "table",
    { class: "metrics" },
    h("caption", { text: `Baseline: ${baseline.name ?? "none recorded"}` }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Metric", "This model", "Baseline"].map((t) => h("th", { scope: "col", text: t })),
      ),
    ),
    h(
      "tbody",
      {},
      names.map((name) =>
        h(
          "tr",
          {},
          h("th", { scope: "row", text: words(name) }),
          h("td", { text: num(test[name]) }),
          h("td", { text: typeof baseline[name] === "number" ? num(baseline[name]) : "—" }),
        ),
      ),
    ),
  );
}

function tensorTable(card) {
  const row = (kind) => (spec) =>
    h(
      "tr",
      {},
      h(
        "th",
        { scope: "row" },
        h("span", { class: "hint", text: `${kind} ` }),
        h("span", { class: "mono", text: spec.name }),
      ),
      h("td", { text: spec.datatype }),
      h("td", {
        class: "mono",
        text: `[${spec.shape.map((d) => (d === -1 || d === null ? "any" : d)).join(", ")}]`,
      }),
    );
  return h(
    "table",
    { class: "tensors" },
    h("caption", { text: "“any”: a dynamic axis (the batch, the sequence)." }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Tensor", "Datatype", "Shape"].map((t) => h("th", { scope: "col", text: t })),
      ),
    ),
    h("tbody", {}, card.inputs.map(row("input")), (card.outputs ?? []).map(row("output"))),
  );
}

async function learningCurve(figure, card) {
  if (!card.learning_curve) {
    figure.replaceChildren(h("p", { class: "muted", text: "This version has no learning_curve.png." }));
    return;
  }
  try {
    const url = await blobURL(
      `/v1/models/${encodeURIComponent(card.name)}/versions/${card.version}/learning_curve.png`,
    );
    figure.replaceChildren(
      h("img", {
        src: url,
        alt: `Learning curve of ${card.name}: training and validation loss per epoch, and the validation metric, with the epoch that was kept.`,
        id: "learning-curve",
      }),
      h("figcaption", { text: "Loss per epoch on the training and validation splits (training/ draws it)." }),
    );
  } catch (error) {
    showError(figure, error);
  }
}

function tryIt(container, card, rows, examples) {
  if (!card.ready) {
    container.replaceChildren(
      h("p", {
        class: "error",
        text: `This version is not ready, so it cannot be tried: ${card.reason ?? "no reason given"}`,
      }),
    );
    return;
  }
  const rank = card.inputs[0]?.shape.length;
  if (isDigitClassifier(card)) {
    // The others' newest versions, and this page's version of this one, whichever it is.
    const models = [...digitClassifiers(rows).filter((row) => row.name !== card.name), card];
    digitsPanel(container, { models, current: card.name, example: examples.digits });
  } else if (card.task === "discriminator" && card.inputs[0]?.shape.at(-1) === 64) {
    digitsPanel(container, { models: [card], current: card.name, example: examples.digits });
  } else if (card.task === "generator") {
    ganPanel(container, card);
  } else if (card.task === "seq2seq") {
    datesPanel(container, card);
  } else if (card.task === "language_model") {
    gptPanel(container, card);
  } else if (
    ["regression", "binary_classification", "multiclass_classification"].includes(card.task) &&
    rank === 2
  ) {
    tabularPanel(container, card, examples[card.name]);
  } else {
    container.replaceChildren(
      h(
        "p",
        {},
        `No try-it panel for the task “${card.task ?? "unknown"}”; the `,
        h("a", { href: "/docs", text: "API docs" }),
        " show how to call it.",
      ),
    );
  }
}

export async function renderModel(main, name, version) {
  document.title = `${name} · recap-serve`;
  main.replaceChildren(h("p", { class: "muted", text: `Loading ${name}…` }));
  const path = `/ui/api/models/${encodeURIComponent(name)}${version ? `/versions/${encodeURIComponent(version)}` : ""}`;
  let card;
  let rows;
  let examples;
  try {
    [card, rows, examples] = await Promise.all([
      getJSON(path),
      getJSON("/ui/api/models").then((list) => list.models),
      fetch("/static/ui/examples.json").then((response) => (response.ok ? response.json() : {})),
    ]);
  } catch (error) {
    const box = h("div");
    main.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "/ui", text: "All models" })),
      h("h1", { text: name }),
      box,
    );
    showError(box, error);
    return;
  }
  const json = card.model_json ?? {};
  const badge = h("span", {
    class: card.ready ? "badge ready" : "badge not-ready",
    text: card.ready ? "ready" : "not ready",
  });
  const versions =
    card.versions.length > 1
      ? h(
          "nav",
          { "aria-label": "Versions" },
          "Versions: ",
          card.versions.map((v) => [
            h("a", {
              href: modelLink({ name, version: v }, false),
              "aria-current": v === card.version ? "page" : null,
              text: v,
            }),
            " ",
          ]),
        )
      : null;
  const curve = h(
    "figure",
    { class: "curve" },
    h("p", { class: "muted", text: "Loading the learning curve…" }),
  );
  const panel = h("div", { id: "tryit" });
  const topFacts = facts(
    [
      ["recap topic", json.recap_topic],
      ["task", card.task ? (TASKS[card.task] ?? words(card.task)) : undefined],
      ["dataset", json.dataset],
      ["description", card.description],
      ["providers", card.providers.join(", ") || "none (not ready)"],
      ["status", card.ready ? "ready" : card.reason],
    ].filter(([, value]) => value),
    "",
    {},
  );
  const rest = Object.entries(json).filter(([key]) => !SHOWN.has(key));
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/ui", text: "All models" }), " › ", name),
    h(
      "div",
      { class: "headline" },
      h("h1", { text: name }),
      h("span", { text: `version ${card.version}` }),
      badge,
      versions,
    ),
    lead(card),
    h(
      "section",
      { class: "panel", "aria-labelledby": "tryit-title" },
      h("h2", { id: "tryit-title", text: "Try it" }),
      panel,
    ),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "card-title" },
        h("h2", { id: "card-title", text: "Model card" }),
        topFacts,
        h("h3", { text: "Test metrics" }),
        metricsTable(card.metrics),
      ),
      h(
        "section",
        { class: "panel", "aria-labelledby": "curve-title" },
        h("h2", { id: "curve-title", text: "Learning curve" }),
        curve,
      ),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "tensors-title" },
      h("h2", { id: "tensors-title", text: "Inputs and outputs" }),
      h("div", { class: "table-wrap" }, tensorTable(card)),
    ),
    rest.length
      ? h(
          "section",
          { class: "panel" },
          h(
            "details",
            {},
            h("summary", { text: "Everything else model.json says" }),
            facts(rest, "", card.trimmed ?? {}),
          ),
        )
      : h("p", {
          class: "muted",
          text: "This version has no model.json: the server read its inputs and outputs from the graph.",
        }),
  );
  tryIt(panel, card, rows, examples);
  learningCurve(curve, card);
}
