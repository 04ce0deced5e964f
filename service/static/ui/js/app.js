// The model browser's entry point: picks the page from the address, wires the key button and starts
// the status strip. Pages are plain links (a full load each): no client-side router to keep in sync.

import { askForKey, setKey, storedKey } from "./api.js";
import { renderHome } from "./home.js";
import { renderModel } from "./model.js";
import { startStatus } from "./status.js";

const MODEL_PAGE = /^\/ui\/models\/([^/]+)(?:\/versions\/([^/]+))?\/?$/;

document.getElementById("key-button").addEventListener("click", async () => {
  setKey(storedKey()); // pressing the button asks again even after a cancel
  const reason = storedKey()
    ? "Replace the API key this tab uses, or forget it."
    : "Enter an API key for this server.";
  await askForKey(reason);
  window.location.reload(); // every panel reads again with the new key
});

const main = document.getElementById("main");
const match = MODEL_PAGE.exec(window.location.pathname);
if (match) {
  renderModel(main, decodeURIComponent(match[1]), match[2] && decodeURIComponent(match[2]));
} else {
  renderHome(main);
}
startStatus(document.getElementById("status"));
