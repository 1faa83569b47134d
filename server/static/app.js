// The page talks to the same JSON API as every other client; errors are shown in plain words.
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
  $("results").hidden = true;  // a failed upload never leaves the previous result on screen
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// A server with API keys needs one to change vocabularies (and maybe to classify): it is kept in
// this browser only (localStorage) and sent as a Bearer token.
function authHeaders() {
  const key = $("api-key").value.trim();
  localStorage.setItem("t4v-api-key", key);
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function readError(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail)) detail = body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  } catch (_) { /* not JSON: keep the status line */ }
  const advice = { 401: "This server needs an API key: type it under “or create one”.", 413: "The file is too large for this server.", 415: "This file is not a video or image the server can read.",
                   503: "The server is busy or still starting; try again in a moment.", 404: "That vocabulary does not exist." };
  return advice[response.status] ? `${advice[response.status]} (${detail})` : detail;
}

async function loadVocabs(selected) {
  const response = await fetch("/vocab");
  if (!response.ok) { showError(await readError(response)); return; }
  const { vocabularies } = await response.json();
  const select = $("vocab-select");
  select.innerHTML = "";
  if (vocabularies.length === 0) select.add(new Option("(none yet)", ""));
  for (const v of vocabularies) select.add(new Option(`${v.name} (${v.num_labels} labels, v${v.version})`, v.name));
  if (selected) select.value = selected;
}

async function saveVocab() {
  clearError();
  const name = $("vocab-name").value.trim();
  const labels = $("vocab-labels").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!name) { showError("Give the vocabulary a name (letters, digits, . _ -)."); return; }
  if (labels.length === 0) { showError("Type at least one label, one per line."); return; }
  $("status").textContent = "Encoding the labels…";
  const response = await fetch(`/vocab/${encodeURIComponent(name)}`, {
    method: "PUT", headers: { "content-type": "application/json", ...authHeaders() }, body: JSON.stringify({ labels }),
  });
  if (!response.ok) { showError(await readError(response)); return; }
  const vocab = await response.json();
  showWarnings(vocab.warnings || []);
  await loadVocabs(vocab.name);  // select the new vocabulary before saying it is saved: no stale choice in between
  $("status").textContent = `Saved “${vocab.name}”, version ${vocab.version}, ${vocab.labels.length} labels.`;
}

function showWarnings(warnings) {
  // informative: the vocabulary is saved; these label pairs are likely to be confused
  const list = $("vocab-warnings");
  list.innerHTML = "";
  for (const w of warnings) {
    const item = document.createElement("li");
    const kind = w.kind === "near_duplicate" ? "Nearly the same label" : "Hard to tell apart";
    item.textContent = `${kind}: “${w.labels[0]}” and “${w.labels[1]}” (cosine ${w.cosine.toFixed(3)})`;
    list.appendChild(item);
  }
  list.hidden = warnings.length === 0;
}

async function loadModel() {
  const response = await fetch("/models");
  if (!response.ok) return;  // still loading: the first classify says so
  const [model] = await response.json();
  $("model-line").textContent = `Model: ${model.model_id} (${model.temporal} head) on ${model.device}, ${model.backend}.`;
  $("random-warning").hidden = !model.model_id.includes("/random-seed");
}

function selectedVocab() {
  const name = $("vocab-select").value;
  if (!name) showError("Choose or create a vocabulary first.");
  return name;
}

async function viewVocab() {
  clearError();
  const name = selectedVocab();
  if (!name) return;
  const response = await fetch(`/vocab/${encodeURIComponent(name)}`);
  if (!response.ok) { showError(await readError(response)); return; }
  const vocab = await response.json();
  $("vocab-labels-title").textContent = `“${vocab.name}”, version ${vocab.version}: ${vocab.labels.length} labels, ` +
    `template${vocab.templates.length > 1 ? "s" : ""} ${vocab.templates.join(" | ")}`;
  const list = $("vocab-labels-list");
  list.innerHTML = "";
  for (const label of vocab.labels) {
    const item = document.createElement("li");
    item.textContent = label;
    list.appendChild(item);
  }
  $("vocab-name").value = vocab.name;  // ready to edit and save as a new version
  $("vocab-labels").value = vocab.labels.join("\n");
  $("vocab-heatmap").href = `/vocab/${encodeURIComponent(vocab.name)}/similarity?format=png`;
  showWarnings(vocab.warnings || []);
  $("vocab-labels-view").hidden = false;
}

async function deleteVocab() {
  clearError();
  const name = selectedVocab();
  if (!name) return;
  if (!window.confirm(`Delete the vocabulary “${name}”? Classify requests naming it will fail.`)) return;
  const response = await fetch(`/vocab/${encodeURIComponent(name)}`, { method: "DELETE", headers: authHeaders() });
  if (!response.ok) { showError(await readError(response)); return; }
  $("vocab-labels-view").hidden = true;
  await loadVocabs();
  $("status").textContent = `Deleted “${name}”.`;
}

function preview() {
  const file = $("file").files[0];
  const box = $("preview");
  box.innerHTML = "";
  if (!file) return;
  const url = URL.createObjectURL(file);
  const media = document.createElement(file.type.startsWith("image/") ? "img" : "video");
  media.alt = file.name;
  if (media.tagName === "VIDEO") {
    media.controls = true;
    media.muted = true;
    // a format the browser cannot play (AVI, some MP4 codecs) is a black box: say so, and show
    // the first frame the server decodes once the file is classified (render())
    const unplayable = () => {
      box.innerHTML = "";
      const note = document.createElement("p");
      note.id = "preview-note";
      note.textContent = `This browser cannot play ${file.name}; the server can: classify it to see its frames.`;
      box.appendChild(note);
      box.dataset.fromServer = "wanted";
    };
    media.addEventListener("error", unplayable);
    media.addEventListener("loadedmetadata", () => { if (!media.videoWidth) unplayable(); });
  }
  media.src = url;
  box.dataset.fromServer = "";
  box.appendChild(media);
}

function serverFrame(result, fileName) {
  // the preview of a file the browser could not play: the first frame the server decoded
  const box = $("preview");
  if (box.dataset.fromServer !== "wanted" || !(result.thumbnails || []).length) return;
  box.innerHTML = "";
  const img = document.createElement("img");
  img.id = "preview-frame";
  img.src = result.thumbnails[0];
  img.alt = `${fileName}: frame ${result.frame_indices[0]}, decoded by the server`;
  box.appendChild(img);
}

function render(result, fileName) {
  const vocab = result.vocab ? `vocabulary “${result.vocab.name}” v${result.vocab.version}` : "ad-hoc labels";
  $("result-header").textContent = `${fileName} — ${vocab} — model ${result.model} — ` +
    `${result.frame_indices.length} frames, ${Math.round(result.timing_ms.total)} ms`;
  const chart = $("chart");
  chart.innerHTML = "";
  const top = Math.max(...result.predictions.map((p) => p.probability), 1e-9);
  for (const p of result.predictions) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = p.label;
    label.title = p.label;
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p.probability) / top}%`;
    bar.dataset.probability = p.probability;
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * p.probability).toFixed(1)}%`;
    row.append(label, track, value);
    chart.appendChild(row);
  }
  const abstained = $("abstained");
  abstained.hidden = !result.abstained;
  if (result.abstained) {
    const near = (result.background || []).map((p) => p.label).join(", ");
    const reason = result.abstain_reason.replace(/\s*$/, "").replace(/([^.!?])$/, "$1.");
    abstained.textContent = `None of these: ${reason}` + (near ? ` Nearest everyday actions: ${near}.` : "");
  }
  serverFrame(result, fileName);
  const thumbs = $("thumbs");
  thumbs.innerHTML = "";
  (result.thumbnails || []).forEach((src, i) => {
    const img = document.createElement("img");
    img.src = src;
    img.alt = `frame ${result.frame_indices[i]}`;
    thumbs.appendChild(img);
  });
  $("results").hidden = false;
}

async function classify() {
  clearError();
  const file = $("file").files[0];
  const vocab = $("vocab-select").value;
  if (!vocab) { showError("Choose or create a vocabulary first."); return; }
  if (!file) { showError("Choose a video or an image to classify."); return; }
  const form = new FormData();
  form.append("file", file);
  form.append("vocab", vocab);
  form.append("top_k", $("top-k").value || "5");
  form.append("thumbnails", "true");
  if ($("abstain").checked) form.append("abstain", "true");
  $("timeline-results").hidden = true;
  $("status").textContent = "Classifying…";
  $("classify").disabled = true;
  try {
    const response = await fetch("/classify", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) { showError(await readError(response)); return; }
    const result = await response.json();
    $("status").textContent = `Done in ${Math.round(result.timing_ms.total)} ms.`;
    render(result, file.name);
  } catch (err) {
    showError(`Could not reach the server (${err}).`);
  } finally {
    $("classify").disabled = false;
  }
}

// Timeline: the server streams one JSON line per window (NDJSON); the band grows as they arrive.
const PALETTE = ["#3b7dd8", "#e07b39", "#3aa35b", "#c9486b", "#8a63c7", "#b8962e", "#2aa0a4", "#7a7a7a"];

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function colourOf(label, colours) {
  if (!colours.has(label)) {
    colours.set(label, PALETTE[colours.size % PALETTE.length]);
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colours.get(label);
    item.append(swatch, label);
    $("timeline-legend").appendChild(item);
  }
  return colours.get(label);
}

async function* ndjsonLines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffered += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) if (line.trim()) yield JSON.parse(line);
    if (done) break;
  }
  if (buffered.trim()) yield JSON.parse(buffered);
}

async function timeline() {
  clearError();
  const file = $("file").files[0];
  const vocab = $("vocab-select").value;
  if (!vocab) { showError("Choose or create a vocabulary first."); return; }
  if (!file) { showError("Choose a video to see its timeline."); return; }
  const form = new FormData();
  form.append("file", file);
  form.append("vocab", vocab);
  form.append("window_s", $("window-s").value || "8");
  form.append("top_k", "3");
  form.append("stream", "true");
  // "none of these" is a classify answer: a timeline shows every window's best labels, and says so
  $("timeline-note").hidden = !$("abstain").checked;
  $("status").textContent = "Reading the video's timestamps…";
  $("results").hidden = true;
  $("timeline-results").hidden = true;
  $("timeline").disabled = true;
  const band = $("timeline-band");
  const colours = new Map();
  try {
    const response = await fetch("/classify/timeline", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) { showError(await readError(response)); return; }
    let duration = 1, windows = 0, seen = 0;
    for await (const line of ndjsonLines(response)) {
      if (line.type === "start") {
        ({ duration_s: duration, windows } = line);
        duration = Math.max(duration, 1e-6);
        band.innerHTML = "";
        $("timeline-legend").innerHTML = "";
        $("timeline-events").innerHTML = "";
        $("timeline-header").textContent = `${file.name} — ${clock(line.duration_s)} — ${windows} windows of ` +
          `${line.window_s} s — model ${line.model}`;
        $("timeline-results").hidden = false;
      } else if (line.type === "segment") {
        seen += 1;
        const top = line.predictions[0];
        const part = document.createElement("div");
        part.className = "segment";
        part.style.left = `${(100 * line.start_s) / duration}%`;
        part.style.width = `${(100 * (line.end_s - line.start_s)) / duration}%`;
        part.style.background = colourOf(top.label, colours);
        part.dataset.label = top.label;
        part.title = `${clock(line.start_s)}–${clock(line.end_s)}: ${top.label} (${(100 * top.probability).toFixed(0)}%)`;
        band.appendChild(part);
        $("status").textContent = `Window ${seen} of ${windows}…`;
      } else if (line.type === "end") {
        for (const e of line.events) {
          const item = document.createElement("li");
          item.textContent = `${clock(e.start_s)}–${clock(e.end_s)}: ${e.label} (${e.windows} ` +
            `window${e.windows > 1 ? "s" : ""}, ${(100 * e.probability).toFixed(0)}%)`;
          $("timeline-events").appendChild(item);
        }
        $("status").textContent = `Timeline done in ${Math.round(line.timing_ms.total)} ms.`;
      } else if (line.type === "error") {
        showError(`The timeline stopped after ${seen} windows: ${line.detail}`);
      }
    }
  } catch (err) {
    showError(`Could not reach the server (${err}).`);
  } finally {
    $("timeline").disabled = false;
  }
}

$("api-key").value = localStorage.getItem("t4v-api-key") || "";
$("timeline").addEventListener("click", timeline);
$("vocab-save").addEventListener("click", saveVocab);
$("classify").addEventListener("click", classify);
$("vocab-view").addEventListener("click", viewVocab);
$("vocab-delete").addEventListener("click", deleteVocab);
$("file").addEventListener("change", preview);
loadVocabs();
loadModel();
