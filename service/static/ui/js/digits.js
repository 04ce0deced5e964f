// The 8x8 drawing pad (pointer or keyboard) and the digit classifiers' answers side by side.
// Pixels are on the digits dataset's raw scale, 0..16, as the models take them.

import { infer } from "./api.js";
import { barChart, errorBox, h, percent } from "./dom.js";

const SIZE = 8;
const INK = 16;
const EDGE = 8; // the brush's soft edge left and right of the stroke, like the dataset's 2-pixel strokes
// Side by side in the order of the course: MLP, then the sequence models.
const ORDER = ["mlp", "rnn", "lstm", "gru", "transformer_encoder"];
const TITLES = { mlp: "MLP", rnn: "RNN", lstm: "LSTM", gru: "GRU", transformer_encoder: "Transformer" };
const DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/** A classifier of 8x8 digits: ten labels 0-9 and 64 pixels (an MLP) or rows of 8 (a sequence model). */
export function isDigitClassifier(model) {
  const shape = model.inputs?.[0]?.shape ?? [];
  const pixels = shape.length === 2 && shape[1] === SIZE * SIZE;
  const rows = model.task === "sequence_classification" && shape.length === 3 && shape[2] === SIZE;
  return (
    JSON.stringify(model.labels) === JSON.stringify(DIGITS) &&
    ((model.task === "multiclass_classification" && pixels) || rows)
  );
}

const rank = (model) => {
  const i = ORDER.indexOf(model.architecture);
  return i < 0 ? ORDER.length : i;
};

/** The newest ready version of each digit classifier, in the course's order (MLP first). */
export function digitClassifiers(rows) {
  const newest = new Map();
  for (const row of rows) {
    const known = newest.get(row.name);
    if (row.ready && isDigitClassifier(row) && (!known || Number(row.version) > Number(known.version))) {
      newest.set(row.name, row);
    }
  }
  return [...newest.values()].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** The feed for one model: [1, 64] for an MLP, [1, 8, 8] (rows as a sequence) for the others. */
function feed(model, pixels) {
  const spec = model.inputs[0];
  const shape = spec.shape.length === 3 ? [1, SIZE, SIZE] : [1, SIZE * SIZE];
  return [{ name: spec.name, datatype: "FP32", shape, data: Array.from(pixels) }];
}

class Pad {
  constructor(onStroke) {
    this.pixels = new Float32Array(SIZE * SIZE);
    this.cursor = { row: 3, col: 3 };
    this.onStroke = onStroke;
    this.canvas = h("canvas", {
      class: "pad",
      width: 256,
      height: 256,
      tabindex: "0",
      role: "img",
      "aria-label": "Drawing pad, 8 by 8 pixels",
      "aria-describedby": "pad-help",
    });
    this.canvas.addEventListener("pointerdown", (event) => this.down(event));
    this.canvas.addEventListener("pointermove", (event) => this.move(event));
    this.canvas.addEventListener("pointerup", () => this.up());
    this.canvas.addEventListener("pointercancel", () => this.up());
    this.canvas.addEventListener("keydown", (event) => this.key(event));
    this.canvas.addEventListener("focus", () => this.draw());
    this.canvas.addEventListener("blur", () => this.draw());
    this.draw();
  }

  cellAt(event) {
    const box = this.canvas.getBoundingClientRect();
    const col = Math.floor(((event.clientX - box.left) / box.width) * SIZE);
    const row = Math.floor(((event.clientY - box.top) / box.height) * SIZE);
    return { row: Math.min(SIZE - 1, Math.max(0, row)), col: Math.min(SIZE - 1, Math.max(0, col)) };
  }

  paint({ row, col }, erase = false) {
    const at = (r, c) => r * SIZE + c;
    if (erase) {
      this.pixels[at(row, col)] = 0;
    } else {
      this.pixels[at(row, col)] = INK;
      for (const c of [col - 1, col + 1]) {
        if (c >= 0 && c < SIZE) this.pixels[at(row, c)] = Math.max(this.pixels[at(row, c)], EDGE);
      }
    }
    this.cursor = { row, col };
    this.draw();
  }

  down(event) {
    this.canvas.setPointerCapture(event.pointerId);
    this.drawing = true;
    this.paint(this.cellAt(event));
  }

  move(event) {
    if (this.drawing) this.paint(this.cellAt(event));
  }

  up() {
    if (this.drawing) {
      this.drawing = false;
      this.onStroke();
    }
  }

  key(event) {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const { row, col } = this.cursor;
    if (moves[event.key]) {
      const [dr, dc] = moves[event.key];
      this.cursor = {
        row: Math.min(SIZE - 1, Math.max(0, row + dr)),
        col: Math.min(SIZE - 1, Math.max(0, col + dc)),
      };
      if (event.shiftKey) this.paint(this.cursor); // Shift+arrow draws a line
      this.draw();
    } else if (event.key === " ") {
      this.paint(this.cursor);
    } else if (event.key === "Backspace" || event.key === "Delete") {
      this.paint(this.cursor, true);
    } else if (event.key === "Enter") {
      this.onStroke();
    } else {
      return;
    }
    event.preventDefault();
  }

  set(values) {
    this.pixels.set(values);
    this.draw();
  }

  clear() {
    this.pixels.fill(0);
    this.draw();
  }

  draw() {
    const context = this.canvas.getContext("2d");
    const cell = this.canvas.width / SIZE;
    context.fillStyle = "#fff";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.pixels.forEach((value, i) => {
      const shade = Math.round(255 * (1 - value / INK)); // ink dark on white, as samples.png
      context.fillStyle = `rgb(${shade} ${shade} ${shade})`;
      context.fillRect((i % SIZE) * cell, Math.floor(i / SIZE) * cell, cell, cell);
    });
    context.strokeStyle = "#d9dde5";
    for (let i = 1; i < SIZE; i += 1) {
      context.beginPath();
      context.moveTo(i * cell, 0);
      context.lineTo(i * cell, this.canvas.height);
      context.moveTo(0, i * cell);
      context.lineTo(this.canvas.width, i * cell);
      context.stroke();
    }
    if (this.canvas.matches(":focus-visible")) {
      // the keyboard cursor
      context.strokeStyle = "#f5a623";
      context.lineWidth = 3;
      context.strokeRect(this.cursor.col * cell + 1.5, this.cursor.row * cell + 1.5, cell - 3, cell - 3);
      context.lineWidth = 1;
    }
  }
}

/**
 * The digits panel: the pad, then one chart per model in `models` (the digit classifiers, or the GAN's
 * discriminator alone). `current` is the page's model, outlined among the charts.
 */
export function digitsPanel(container, { models, current, example }) {
  const ordered = [...models].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  const results = h("div", {
    class: ordered.length > 1 ? "charts" : "charts single",
    "aria-live": "polite",
    id: "digit-results",
  });
  const status = h("p", { class: "hint", role: "status" });
  let asked = 0;
  const classify = async () => {
    const mine = ++asked;
    if (!pad.pixels.some((v) => v > 0)) {
      status.textContent = "Draw something first.";
      return;
    }
    status.textContent = `Asking ${ordered.length} model${ordered.length > 1 ? "s" : ""}…`;
    const answers = await Promise.allSettled(
      ordered.map((model) =>
        infer(model.name, model.version, feed(model, pad.pixels), [{ name: "probabilities" }]),
      ),
    );
    if (mine !== asked) return; // a newer stroke's answers are on their way
    results.replaceChildren(
      ...answers.map((answer, i) => chart(ordered[i], answer, ordered[i].name === current)),
    );
    status.textContent = `Answered by ${answers.filter((a) => a.status === "fulfilled").length} of ${ordered.length}.`;
  };
  const pad = new Pad(classify);
  const buttons = h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "primary", onclick: classify, text: "Classify" }),
    h("button", {
      type: "button",
      onclick: () => {
        pad.clear();
        results.replaceChildren();
        status.textContent = "";
      },
      text: "Clear",
    }),
    example
      ? h("button", {
          type: "button",
          onclick: () => {
            pad.set(example.features);
            classify();
          },
          text: `A real “${example.target}”`,
        })
      : null,
  );
  container.replaceChildren(
    h(
      "div",
      { class: "draw" },
      h(
        "div",
        {},
        pad.canvas,
        h("p", {
          class: "hint",
          id: "pad-help",
          text: "Draw with the mouse or a finger; or focus the pad, move with the arrow keys, Space paints, Shift+arrow draws, Backspace erases, Enter classifies.",
        }),
        buttons,
        status,
      ),
      results,
    ),
  );
  return { pad, classify };
}

function chart(model, answer, highlight) {
  const kind = TITLES[model.architecture];
  const title = kind ? `${kind} · ${model.name}` : model.name;
  if (answer.status === "rejected") {
    return h(
      "figure",
      { class: "chart", dataset: { model: model.name } },
      h("h3", { text: title }),
      errorBox(answer.reason),
    );
  }
  const values = answer.value.probabilities;
  let bars;
  let note;
  if (values.length === 1) {
    // the discriminator: P(labels[1]) = P(real)
    const labels = model.labels ?? ["no", "yes"];
    bars = [
      { label: labels[0], value: 1 - values[0] },
      { label: labels[1], value: values[0] },
    ];
    note = `P(${labels[1]}) = ${percent(values[0])}`;
  } else {
    bars = values.map((value, i) => ({ label: model.labels?.[i] ?? String(i), value }));
  }
  const figure = barChart({ title, bars, note, highlight });
  figure.dataset.model = model.name;
  return figure;
}
