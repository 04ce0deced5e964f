// Talking to this server: the API key (asked once, kept in session storage, sent as a Bearer header),
// the API's {"error": ...} messages, blob URLs for images and a reader for server-sent events.
// <img> and EventSource cannot send headers, so everything goes through fetch().

const KEY = "recap-serve.api-key";
let prompting = null; // one key prompt at a time, however many requests were refused meanwhile
let declined = false; // the visitor cancelled: do not ask again until they press "API key"

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const storedKey = () => sessionStorage.getItem(KEY);

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  declined = false;
}

export const modelPath = (name, version) =>
  `/v2/models/${encodeURIComponent(name)}${version ? `/versions/${encodeURIComponent(version)}` : ""}`;

function withKey(headers = {}) {
  const key = storedKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText || "error"}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) message = `This server needs an API key (${message}).`;
  if (response.status === 403) message = `Your API key may not do this: ${message}.`;
  return new ApiError(response.status, message);
}

/** Ask for a key with the dialog of index.html; resolves true once one is stored. */
export function askForKey(reason) {
  if (declined) return Promise.resolve(false);
  prompting ??= new Promise((resolve) => {
    const dialog = document.getElementById("key-dialog");
    const input = document.getElementById("key-input");
    document.getElementById("key-reason").textContent = reason || "Enter an API key for this server.";
    input.value = "";
    const finish = (key) => {
      dialog.close();
      prompting = null;
      if (key) setKey(key);
      else declined = true;
      resolve(Boolean(key));
    };
    document.getElementById("key-form").onsubmit = (event) => {
      event.preventDefault();
      finish(input.value.trim());
    };
    document.getElementById("key-cancel").onclick = () => finish("");
    document.getElementById("key-forget").onclick = () => {
      setKey("");
      finish("");
    };
    dialog.oncancel = (event) => {
      event.preventDefault();
      finish("");
    };
    dialog.showModal();
  });
  return prompting;
}

/** fetch() with the key; a 401 asks for a key (unless `ask` is false) and tries again. */
export async function request(path, options = {}, { ask = true } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: withKey(options.headers) });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, `The server did not answer (${error.message}). Is it still running?`);
    }
    if (response.ok) return response;
    const error = await failure(response);
    const retry = response.status === 401 && ask && attempt < 3;
    if (
      retry &&
      (await askForKey(storedKey() ? `That key was not accepted. ${error.message}` : error.message))
    ) {
      continue;
    }
    throw error;
  }
}

export async function getJSON(path, options) {
  return (await request(path, {}, options)).json();
}

export async function getText(path, options) {
  return (await request(path, {}, options)).text();
}

export async function postJSON(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** An image (or any file) as a blob: URL; the caller revokes it when the image is replaced. */
export async function blobURL(path) {
  return URL.createObjectURL(await (await request(path)).blob());
}

/** V2 infer of one request; resolves to the response's outputs by name. */
export async function infer(name, version, inputs, outputs) {
  const answer = await postJSON(`${modelPath(name, version)}/infer`, { inputs, outputs });
  return Object.fromEntries(answer.outputs.map((output) => [output.name, output.data]));
}

/** POST `body` and call `onEvent` with each server-sent event's JSON as it arrives. */
export async function streamEvents(path, body, onEvent, signal) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) {
        const event = JSON.parse(data);
        if (typeof event.error === "string") throw new ApiError(200, event.error); // failed mid-stream
        onEvent(event);
      }
      end = buffer.indexOf("\n\n");
    }
  }
}
