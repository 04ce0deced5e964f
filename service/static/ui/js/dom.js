// Small DOM helpers and the two charts (bars, a value within a range). Styles are set through the
// CSSOM only, which the page's Content-Security-Policy allows (inline style attributes it does not).

/** h("p", {class: "x", onclick: f}, "text", child) -> element */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  element.append(
    ...children.flat().filter((child) => child !== null && child !== undefined && child !== false),
  );
  return element;
}

/** A number shown with `digits` significant digits (integers as they are). */
export function num(value, digits = 4) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  return String(Number(value.toPrecision(digits)));
}

export const percent = (p) => `${(p * 100).toFixed(1)}%`;

/** Words for a model.json key: "test_fraction" -> "test fraction". */
export const words = (key) => key.replaceAll("_", " ");

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** Replace `target`'s content with the error's message (the API's {"error"} text). */
export function showError(target, error) {
  target.replaceChildren(errorBox(error));
}

/**
 * A labelled horizontal bar chart of probabilities (0..1). Each bar is an <li> whose data-label and
 * data-value hold the label and the exact value the server sent.
 */
export function barChart({ title, bars, note, highlight = false, max = 1 }) {
  const best = bars.reduce((top, bar, i) => (bar.value > bars[top].value ? i : top), 0);
  const list = h("ol", { class: "bars" });
  bars.forEach((bar, i) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, bar.value / max)) * 100}%`;
    list.append(
      h(
        "li",
        {
          class: i === best ? "best" : null,
          dataset: { label: bar.label, value: String(bar.value) },
          "aria-label": `${bar.label}: ${percent(bar.value)}`,
        },
        h("span", { class: "label", text: bar.label }),
        h("span", { class: "track", "aria-hidden": "true" }, fill),
        h("span", { class: "value", text: percent(bar.value), "aria-hidden": "true" }),
      ),
    );
  });
  return h(
    "figure",
    { class: highlight ? "chart highlight" : "chart", dataset: { top: bars[best]?.label ?? "" } },
    h("h3", { text: title }),
    h("p", {
      class: "verdict",
      text: note ?? `Most likely: ${bars[best]?.label} (${percent(bars[best]?.value)})`,
    }),
    list,
  );
}

/** A value marked on the range [low, high] (a regression's prediction against the dataset's targets). */
export function rangeChart({ title, value, low, high, note }) {
  const marker = h("span", { class: "marker" });
  const where = (Math.max(low, Math.min(high, value)) - low) / (high - low || 1);
  marker.style.left = `calc(${where * 100}% - 1px)`;
  return h(
    "figure",
    { class: "chart range", dataset: { value: String(value) } },
    h("h3", { text: title }),
    h("p", { class: "verdict", text: note }),
    h(
      "div",
      {
        class: "track",
        role: "img",
        "aria-label": `${num(value)} on a scale from ${num(low)} to ${num(high)}`,
      },
      marker,
    ),
    h(
      "div",
      { class: "ends", "aria-hidden": "true" },
      h("span", { text: num(low) }),
      h("span", { text: num(high) }),
    ),
  );
}
