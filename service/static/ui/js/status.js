// The status strip: requests/s per model from the statistics extension (counts) and p99 latency from
// the /metrics histograms (the statistics extension has no percentiles), over the last refresh period.

import { getJSON, getText } from "./api.js";
import { h, num } from "./dom.js";

const PERIOD_MS = 3000;
// Endpoints that run a model; metadata and the UI's own reads would only dilute the percentile.
const RUNS = new Set(["infer", "predict", "classify", "generate", "generate_stream", "samples"]);
const BUCKET = /^recap_request_duration_seconds_bucket\{([^}]*)\}\s+(\S+)/;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** model -> requests (success + fail) summed over its versions. */
function requestCounts(stats) {
  const counts = new Map();
  for (const entry of stats.model_stats ?? []) {
    const s = entry.inference_stats ?? {};
    const n = (s.success?.count ?? 0) + (s.fail?.count ?? 0);
    counts.set(entry.name, (counts.get(entry.name) ?? 0) + n);
  }
  return counts;
}

/** model -> Map(upper bound -> cumulative count), summed over versions and model-running endpoints. */
export function durationBuckets(text) {
  const models = new Map();
  for (const line of text.split("\n")) {
    const match = BUCKET.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[1].matchAll(LABEL)].map((m) => [m[1], m[2]]));
    if (!labels.model || !RUNS.has(labels.endpoint)) continue;
    const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
    const buckets = models.get(labels.model) ?? new Map();
    buckets.set(le, (buckets.get(le) ?? 0) + Number(match[2]));
    models.set(labels.model, buckets);
  }
  return models;
}

/** Prometheus's histogram_quantile: linear within the bucket; {seconds, over} where over = past the last bound. */
export function quantile(q, buckets) {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let below = 0;
  let lower = 0;
  for (const upper of bounds) {
    const count = buckets.get(upper);
    if (count >= rank) {
      if (upper === Infinity) return { seconds: lower, over: true };
      return {
        seconds: lower + ((upper - lower) * (rank - below)) / Math.max(count - below, 1e-12),
        over: false,
      };
    }
    below = count;
    lower = upper;
  }
  return null;
}

function delta(now, before) {
  const out = new Map();
  for (const [le, count] of now) out.set(le, count - (before?.get(le) ?? 0));
  return out;
}

const ms = (p) => (p.over ? `> ${num(p.seconds * 1000, 3)} ms` : `${num(p.seconds * 1000, 3)} ms`);

function render(strip, previous, current) {
  const seconds = previous ? (current.time - previous.time) / 1000 : 0;
  const items = [];
  for (const [model, count] of current.counts) {
    const rate = previous ? (count - (previous.counts.get(model) ?? 0)) / seconds : 0;
    const buckets = current.buckets.get(model);
    const p99 = previous && buckets ? quantile(0.99, delta(buckets, previous.buckets.get(model))) : null;
    if (rate > 0 || p99) {
      items.push(
        h(
          "li",
          { dataset: { model, rate: String(rate), p99: p99 ? String(p99.seconds) : "" } },
          h("strong", { text: model }),
          ` ${num(rate, 3)} req/s`,
          p99 ? ` · p99 ${ms(p99)}` : "",
        ),
      );
    }
  }
  const when = new Date().toLocaleTimeString();
  strip.replaceChildren(
    h("span", { class: "muted", text: previous ? `Last ${Math.round(seconds)} s (${when}):` : "Measuring…" }),
    items.length
      ? h("ul", {}, items)
      : h("span", { class: "muted", text: previous ? "no model requests" : "" }),
  );
}

export function startStatus(strip) {
  let previous = null;
  const tick = async () => {
    try {
      // ask: false: the page asks for a key once; a refused strip only says so.
      const [stats, text] = await Promise.all([
        getJSON("/v2/models/stats", { ask: false }),
        getText("/metrics", { ask: false }),
      ]);
      const current = {
        time: performance.now(),
        counts: requestCounts(stats),
        buckets: durationBuckets(text),
      };
      render(strip, previous, current);
      previous = current;
    } catch (error) {
      const scope =
        error.status === 401 || error.status === 403 ? " (it needs a key with the metrics scope)" : "";
      strip.replaceChildren(
        h("span", { class: "problem", text: `Status unavailable${scope}: ${error.message}` }),
      );
      previous = null;
    }
    setTimeout(tick, PERIOD_MS);
  };
  tick();
}
