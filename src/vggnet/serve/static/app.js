// The vggnet page: pick or drop an image, POST it to /v1/predict, show the top 5 as bars.
"use strict";
const $ = (id) => document.getElementById(id);
let explainable = false;

fetch("/v1/model").then((r) => r.json()).then((m) => {
  explainable = m.explain;
  $("model").textContent = `${m.architecture} from ${m.run} (${m.backend}), ` +
    `${m.classes.length} classes, weights sha256 ${m.weights_sha256.slice(0, 12)}`;
}).catch(() => { $("model").textContent = "model information unavailable"; });

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function classify(file) {
  $("error").hidden = true;
  $("result").hidden = true;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  const form = new FormData();
  form.append("file", file, file.name);
  const start = performance.now();
  let response, body;
  try {
    response = await fetch("/v1/predict", { method: "POST", body: form });
    body = await response.json();
  } catch (e) {
    return showError(`the service did not answer: ${e}`);
  }
  const roundTrip = performance.now() - start;
  if (!response.ok) return showError(`${response.status}: ${body.detail}`);
  const top = body.predictions[0].top;
  $("top1").textContent = top[0].class;
  $("top1").dataset.class = top[0].class;
  const list = $("top5");
  list.replaceChildren(...top.map((t) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = t.class;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
    bar.append(fill);
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = `${(100 * t.probability).toFixed(1)}%`;
    li.append(name, bar, p);
    return li;
  }));
  $("latency").textContent = `server ${body.latency_ms.toFixed(1)} ms, ` +
    `round trip ${roundTrip.toFixed(1)} ms`;
  $("result").hidden = false;
  if (explainable) explain(file);
}

async function explain(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch("/v1/explain", { method: "POST", body: form });
  if (!response.ok) return;
  $("explain").src = URL.createObjectURL(await response.blob());
  $("explain-box").hidden = false;
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
