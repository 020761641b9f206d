// The captioning page: upload an image to POST /caption and show the answer. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;       // the chosen File
let previewUrl = null;

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    const m = health.model;
    const origin = m.version ? `${m.name} v${m.version}` : (m.source || "local model");
    const run = m.run_id ? ` · run ${m.run_id.slice(0, 8)}` : "";
    const dec = m.decoding;
    // What it is and what it learnt from: "soft_attention over MobileNetV2 (alpha 0.5) features, trained on flickr8k".
    $("about").textContent = m.summary || `${m.architecture}, trained on ${m.dataset || "unknown"}`;
    $("model").textContent = `${origin}${run} · beam ${dec.beam_size}` +
      (dec.beam_size > 1 ? `, length penalty ${dec.length_penalty}` : "");
    $("beam").value = dec.beam_size;
    $("beam").max = health.max_beam_size;
  } catch (e) {
    $("about").textContent = "model information unavailable";
  }
}

// The caption stays, with a note saying the model does not know images like this one.
function showUnsure(answer) {
  const unsure = Boolean(answer && answer.unsure);
  $("unsure").textContent = unsure
    ? `Unsure: ${answer.reason}. The caption may be invented (novelty ${answer.novelty} > ${answer.threshold}).`
    : "";
  $("unsure").hidden = !unsure;
}

// A coarse word, only when the server gives one: never on an unsure image, nor for a model whose
// confidence did not predict caption quality on its dev split (the server decides; null otherwise).
function showConfidence(answer) {
  const word = answer && answer.confidence;
  $("confidence").textContent = word ? `confidence: ${word}` : "";
  $("confidence").title = word
    ? "how likely this caption is by the model's own probability, among the captions of its dev split (thirds)"
    : "";
  $("confidence").hidden = !word;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function caption() {
  if (!current) return;
  showError("");
  $("caption").dataset.state = "working";
  $("caption").textContent = "Captioning…";
  $("meta").textContent = "";
  showUnsure(null);
  showConfidence(null);
  $("attention").hidden = true;
  const form = new FormData();
  form.append("image", current, current.name);
  const beam = parseInt($("beam").value, 10);
  const query = Number.isFinite(beam) ? `?beam_size=${beam}` : "";
  try {
    const response = await fetch(`/caption${query}`, { method: "POST", body: form });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    $("caption").textContent = answer.caption || "(empty caption)";
    $("caption").dataset.state = "done";
    $("meta").textContent = `beam ${answer.beam_size} · ${answer.ms} ms`;
    showUnsure(answer);
    showConfidence(answer);
    if (answer.attention) drawAttention(answer.words, answer.attention);
  } catch (e) {
    $("caption").dataset.state = "empty";
    $("caption").textContent = "No caption.";
    showError(e.message);
  }
}

// Each word: the image squashed to a square (as the encoder saw it), dimmed where attention is low.
function drawAttention(words, attention) {
  const img = $("preview");
  const maps = $("maps");
  maps.replaceChildren();
  const side = attention.grid;
  words.forEach((word, i) => {
    const weights = attention.weights[i];
    const max = Math.max(...weights, 1e-6);
    const grid = document.createElement("canvas");
    grid.width = side; grid.height = side;
    const g = grid.getContext("2d");
    const cells = g.createImageData(side, side);
    weights.forEach((w, k) => {
      cells.data[4 * k + 3] = Math.round(255 * 0.8 * (1 - w / max));  // black, opaque where ignored
    });
    g.putImageData(cells, 0, 0);
    const canvas = document.createElement("canvas");
    canvas.width = 224; canvas.height = 224;
    const c = canvas.getContext("2d");
    c.drawImage(img, 0, 0, 224, 224);
    c.imageSmoothingEnabled = true;  // bilinear upsampling of the region grid
    c.drawImage(grid, 0, 0, 224, 224);
    const figure = document.createElement("figure");
    const label = document.createElement("figcaption");
    label.textContent = word;
    figure.append(canvas, label);
    maps.append(figure);
  });
  $("attention").hidden = words.length === 0;
}

function choose(file) {
  if (!file) return;
  current = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const img = $("preview");
  img.onload = () => caption();
  img.onerror = () => caption();  // not displayable here: let the server say why
  img.src = previewUrl;
  img.hidden = false;
  $("hint").firstChild.textContent = "Drop another image, or ";
  $("again").disabled = false;
}

$("choose").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("again").addEventListener("click", caption);
$("beam").addEventListener("change", caption);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
loadHealth();
