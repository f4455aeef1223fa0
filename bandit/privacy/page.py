"""The privacy page a person opens with their token: consents, data held, decisions, erasure.

One static page (``GET /privacy``); the token travels in the URL's fragment
(``/privacy#token=...``), which browsers never send to servers nor proxies log, and
the page's script sends it as the ``X-Privacy-Token`` header of its JSON calls
(``/v1/me``...). No cookie, no third-party resource.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["PAGE", "PAGE_SCRIPT_HASH", "PAGE_STYLE_HASH"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Your data and choices</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 46rem; padding: 1rem;
         color: #1f2328; }
  h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
  label { display: block; margin: .4rem 0; }
  button { font: inherit; padding: .4rem .9rem; margin-top: .5rem; cursor: pointer; }
  #erase { background: #b42318; color: #fff; border: 0; border-radius: 4px; }
  pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85rem; }
  #status { padding: .5rem .8rem; background: #eef6ff; border-radius: 4px; }
  #status.error { background: #fdecea; }
  li { margin-bottom: .8rem; } .meta { color: #59636e; font-size: .85rem; }
</style>
</head>
<body>
<main>
<h1>Your data and choices</h1>
<p id="status" role="status">Loading&hellip;</p>
<section aria-labelledby="choices">
  <h2 id="choices">Your choices</h2>
  <label><input type="checkbox" id="consent-personalisation">
    Personalise what I am shown (otherwise I am shown options at random)</label>
  <label><input type="checkbox" id="consent-learning">
    Let the service learn from what I do (otherwise it keeps nothing but counts)</label>
  <button id="save-consent" type="button">Save my choices</button>
  <p class="meta" id="consent-detail"></p>
</section>
<section aria-labelledby="held-title">
  <h2 id="held-title">What is held about you</h2>
  <pre id="held"></pre>
</section>
<section aria-labelledby="decisions-title">
  <h2 id="decisions-title">Recent decisions, and why</h2>
  <ol id="decisions"></ol>
</section>
<section aria-labelledby="erase-title">
  <h2 id="erase-title">Erase my data</h2>
  <p>Deletes your choices, the features kept about your sessions and devices, and your
  decisions still being processed. Decisions already recorded can no longer be linked
  to you.</p>
  <label>Type ERASE to confirm <input id="erase-confirm" autocomplete="off"></label>
  <button id="erase" type="button">Erase everything</button>
</section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const statusLine = document.getElementById("status");
function say(text, failed) {
  statusLine.textContent = text;
  statusLine.className = failed ? "error" : "";
}
async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: {"X-Privacy-Token": token, "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) { throw new Error(data.detail || response.statusText); }
  return data;
}
let shown = {};
function showConsent(view) {
  shown = {...view.effective};
  document.getElementById("consent-personalisation").checked = view.effective.personalisation;
  document.getElementById("consent-learning").checked = view.effective.learning;
  const parts = ["personalisation", "learning"].map((kind) => {
    const grant = view[kind];
    if (!grant) { return `${kind}: never asked (default applies)`; }
    return `${kind}: ${grant.granted ? "given" : "refused"} via ${grant.source} on ${grant.at}`;
  });
  document.getElementById("consent-detail").textContent = parts.join("; ");
}
function show(me) {
  showConsent(me.consent);
  document.getElementById("held").textContent = JSON.stringify(me.held, null, 2);
  const list = document.getElementById("decisions");
  list.replaceChildren();
  for (const decision of me.decisions) {
    const item = document.createElement("li");
    item.className = "decision";
    const text = document.createElement("span");
    text.className = "explanation";
    text.textContent = decision.explanation.text;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${new Date(decision.at * 1000).toLocaleString()} \\u00b7 policy ` +
      `${decision.policy}, model version ${decision.model_version}`;
    item.append(text, meta);
    list.append(item);
  }
  if (!me.decisions.length) {
    const none = document.createElement("li");
    none.textContent = "No recent decision is held.";
    list.append(none);
  }
}
async function load() {
  try { show(await call("GET", "/v1/me")); say("Loaded."); }
  catch (error) { say(`Could not load your data: ${error.message}`, true); }
}
document.getElementById("save-consent").addEventListener("click", async () => {
  try {
    const changed = {};  // only what the person changed is recorded as given now
    for (const kind of ["personalisation", "learning"]) {
      const ticked = document.getElementById(`consent-${kind}`).checked;
      if (ticked !== shown[kind]) { changed[kind] = ticked; }
    }
    if (!Object.keys(changed).length) { say("Nothing changed."); return; }
    const view = await call("POST", "/v1/me/consent", changed);
    showConsent(view);
    say("Your choices are saved.");
  } catch (error) { say(`Could not save: ${error.message}`, true); }
});
document.getElementById("erase").addEventListener("click", async () => {
  if (document.getElementById("erase-confirm").value !== "ERASE") {
    say("Type ERASE to confirm.", true);
    return;
  }
  try {
    const erased = await call("POST", "/v1/me/erase");
    show({consent: erased.consent, held: {}, decisions: []});  // this link works no more
    say("Your data is erased.");
  } catch (error) { say(`Could not erase: ${error.message}`, true); }
});
window.addEventListener("hashchange", () => location.reload());  // a new token: start again
load();
</script>
</body>
</html>
"""


def _hash(tag: str) -> str:
    body = re.search(rf"<{tag}>(.*?)</{tag}>", PAGE, re.DOTALL)
    assert body is not None
    digest = hashlib.sha256(body.group(1).encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


PAGE_SCRIPT_HASH = _hash("script")
"""The inline script's hash, the only script the page's content security policy allows."""
PAGE_STYLE_HASH = _hash("style")
"""The inline style sheet's hash, likewise."""
