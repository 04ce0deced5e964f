// The home page: every model version in one table (a card per row on narrow screens).

import { getJSON } from "./api.js";
import { digitClassifiers } from "./digits.js";
import { h, num, showError, words } from "./dom.js";

// Metrics where less is better; every other metric here (accuracy, r2, exact match, ...) is higher-better.
const LOWER_IS_BETTER = new Set(["bits_per_char", "nll", "mse", "mae", "ece", "loss"]);

/** The headline metric: the first test metric the baseline also reports. */
export function headline(metrics) {
  const test = metrics?.test ?? {};
  const baseline = metrics?.baseline ?? {};
  for (const [name, value] of Object.entries(test)) {
    if (typeof value === "number" && typeof baseline[name] === "number") {
      return { name, value, baseline: baseline[name], baselineName: baseline.name ?? "baseline" };
    }
  }
  return null;
}

export function comparison(metric, short = false) {
  const lower = LOWER_IS_BETTER.has(metric.name);
  const diff = metric.value - metric.baseline;
  if (Math.abs(diff) < 1e-9) return h("span", { text: short ? "= baseline" : "the same as the baseline" });
  const better = lower ? diff < 0 : diff > 0;
  const text = short
    ? better
      ? "▲ better"
      : "▼ worse"
    : better
      ? "▲ it beats the baseline"
      : "▼ below the baseline";
  return h("span", { class: better ? "better" : "worse", text });
}

function metricCell(metrics) {
  const metric = headline(metrics);
  if (!metric) return h("span", { class: "muted", text: "no test metric recorded" });
  return h(
    "span",
    { class: "metric" },
    h("span", { class: "mono", text: `${words(metric.name)} ${num(metric.value)}` }),
    h("span", {}, `baseline ${num(metric.baseline)} `, comparison(metric, true)),
    h("span", { class: "hint", text: metric.baselineName }),
  );
}

function statusCell(row) {
  const badge = h("span", {
    class: row.ready ? "badge ready" : "badge not-ready",
    text: row.ready ? "ready" : "not ready",
  });
  return [badge, row.reason ? h("span", { class: "reason", text: row.reason }) : null];
}

function cell(label, ...content) {
  // One wrapper: on narrow screens the cell is a two-column grid (its label, then this).
  const name = label.toLowerCase().replaceAll(" ", "-");
  return h("td", { class: `col-${name}`, dataset: { label } }, h("div", {}, ...content));
}

/** "CPUExecutionProvider" -> "CPU" (the full name in a tooltip). */
export function providers(names = []) {
  if (!names.length) return "—";
  return h(
    "span",
    { title: names.join(", ") },
    names.map((n) => n.replace(/ExecutionProvider$/, "")).join(", "),
  );
}

export function modelLink(row, newest) {
  const base = `/ui/models/${encodeURIComponent(row.name)}`;
  return newest || !row.version ? base : `${base}/versions/${encodeURIComponent(row.version)}`;
}

export async function renderHome(main) {
  document.title = "Models · recap-serve";
  const intro = h(
    "div",
    {},
    h("h1", { text: "The zoo" }),
    h("p", {
      text: "Every model of the recap course, as this server serves it. Open one for its card, its learning curve and a panel to try it.",
    }),
  );
  const holder = h("div", { class: "table-wrap" }, h("p", { class: "muted", text: "Loading the models…" }));
  main.replaceChildren(intro, holder);
  let rows;
  try {
    rows = (await getJSON("/ui/api/models")).models;
  } catch (error) {
    showError(holder, error);
    return;
  }
  const [digits] = digitClassifiers(rows);
  if (digits) {
    intro.append(
      h(
        "p",
        {},
        h("a", { href: modelLink(digits, true) }, "Draw a digit"),
        " and watch the digit classifiers read it side by side.",
      ),
    );
  }
  const newest = new Map();
  for (const row of rows) newest.set(row.name, Math.max(newest.get(row.name) ?? 0, Number(row.version ?? 0)));
  const body = h("tbody");
  for (const row of rows) {
    body.append(
      h(
        "tr",
        { dataset: { model: row.name, version: row.version ?? "" } },
        h(
          "th",
          { scope: "row", dataset: { label: "Model" } },
          h(
            "div",
            {},
            h("a", { href: modelLink(row, Number(row.version) === newest.get(row.name)) }, row.name),
            row.version ? h("span", { class: "hint", text: ` v${row.version}` }) : null,
          ),
        ),
        cell("Recap topic", row.recap_topic ?? "—"),
        cell("Task", row.task ? words(row.task) : "—"),
        cell("Dataset", row.dataset ?? "—"),
        cell("Test metric", metricCell(row.metrics)),
        cell("Status", ...statusCell(row)),
        cell("Providers", providers(row.providers)),
      ),
    );
  }
  const head = h(
    "thead",
    {},
    h(
      "tr",
      {},
      ["Model", "Recap topic", "Task", "Dataset", "Test metric vs baseline", "Status", "Providers"].map((t) =>
        h("th", { scope: "col", text: t }),
      ),
    ),
  );
  const caption = h("caption", {
    text: `${new Set(rows.map((r) => r.name)).size} models, ${rows.length} versions; metrics on each model's held-out test split, against a baseline on the same split.`,
  });
  holder.replaceChildren(h("table", { class: "models" }, caption, head, body));
}
