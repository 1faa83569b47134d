// The Archive tab: the archive's tables, a search (by text, or "more like this" from any row) and a
// browse of its rows as a grid of thumbnails, and the whole archive labelled by a vocabulary as a
// sortable table (a CSV to download). The same JSON API as every other client (app.js's helpers).
const PAGE = 24;
let browseOffset = 0;
let labelled = [];  // [{name, label, probability}] of the last "label the archive"
let sortKey = "probability";
let sortDown = true;

function showTab(name) {
  for (const tab of ["classify", "archive"]) {
    $(`${tab}-tab`).hidden = tab !== name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  clearError();
  $("status").textContent = "";
  if (name === "archive") { loadTables(); loadArchiveVocabs(); }
}

async function loadTables() {
  const response = await fetch("/archive/stats", { headers: authHeaders() });
  if (!response.ok) { showError(await readError(response)); return; }
  const stats = await response.json();
  const body = $("archive-tables").tBodies[0];
  body.innerHTML = "";
  for (const t of stats.tables) {
    const row = body.insertRow();
    if (t.fingerprint === stats.current) row.className = "current";
    for (const text of [t.fingerprint, t.model.replace(/^\S+ \((.*)\)$/, "$1"), t.videos, t.windows,
      t.fingerprint === stats.current ? "yes (this server's model)" : "no: another model"]) {
      row.insertCell().textContent = String(text);
    }
  }
  const behind = Object.values(stats.elsewhere || {}).reduce((a, b) => a + b, 0);
  $("archive-summary").textContent = `${stats.uri}: ${stats.tables.length} table${stats.tables.length === 1 ? "" : "s"}` +
    (behind ? `; ${behind} videos are stored only under other models (t4v archive reindex embeds them under this one).` : ".");
}

function clock2(seconds) {
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function matchesFilter(row) {
  // "key=value": rows whose metadata has that key with that value (as text); empty: every row.
  // Browsing asks the server for matching rows; search results (the top k) are filtered here.
  const filter = $("archive-filter").value.trim();
  if (!filter) return true;
  const [key, ...rest] = filter.split("=");
  const value = rest.join("=").trim();
  const meta = row.metadata || {};
  return key.trim() in meta && (value === "" || String(meta[key.trim()]) === value);
}

function showRows(rows, note) {
  const grid = $("archive-grid");
  grid.innerHTML = "";
  const shown = rows.filter(matchesFilter);
  for (const row of shown) {
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = row.thumbnail || "";
    img.alt = row.name;
    const name = document.createElement("div");
    name.textContent = row.name.split("/").pop();
    name.title = (row.names || [row.name]).join("\n");  // every path the same bytes were seen under
    const detail = document.createElement("div");
    const times = row.kind === "window" ? `${clock2(row.start_s)}–${clock2(row.end_s)} ` : "";
    detail.textContent = times + ((row.names || []).length > 1 ? `(${row.names.length} names) ` : "");
    if (row.score !== undefined) {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `cosine ${row.score.toFixed(3)}`;
      detail.appendChild(score);
    }
    const more = document.createElement("button");
    more.type = "button";
    more.textContent = "More like this";
    more.addEventListener("click", () => similar(row.id, row.name));
    card.append(img, name, detail, more);
    grid.appendChild(card);
  }
  $("archive-note").textContent = note + (shown.length < rows.length ? ` (${rows.length - shown.length} hidden by the metadata filter)` : "");
}

async function archiveGet(url, what) {
  clearError();
  $("status").textContent = what;
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) { showError(await readError(response)); return null; }
  $("status").textContent = "";
  return response.json();
}

async function searchArchive() {
  const q = $("archive-q").value.trim();
  if (!q) { showError("Type what to look for, e.g. surfing."); return; }
  const kind = $("archive-kind").value;
  const found = await archiveGet(`/archive/search?q=${encodeURIComponent(q)}&k=${PAGE}&kind=${kind}&thumbnails=true`, "Searching…");
  if (!found) return;
  $("archive-pager").hidden = true;
  const behind = Object.values(found.elsewhere || {}).reduce((a, b) => a + b, 0);
  showRows(found.results.map((r) => ({ ...r })), `${found.results.length} nearest “${q}”` +
    (behind ? `; ${behind} more videos are stored under other models and not searched` : ""));
}

async function similar(id, name) {
  const kind = $("archive-kind").value;
  const found = await archiveGet(`/archive/videos/${encodeURIComponent(id)}/similar?k=${PAGE}&kind=${kind}`, "Looking for similar rows…");
  if (!found) return;
  $("archive-pager").hidden = true;
  showRows(found.results, `${found.results.length} rows nearest ${name.split("/").pop()}`);
}

async function browse(offset) {
  browseOffset = Math.max(0, offset);
  const kind = $("archive-kind").value;
  const filter = $("archive-filter").value.trim();
  const meta = filter ? `&meta=${encodeURIComponent(filter)}` : "";  // the whole archive filtered, on the server
  const page = await archiveGet(`/archive/videos?kind=${kind}&offset=${browseOffset}&limit=${PAGE}&thumbnails=true${meta}`, "Loading…");
  if (!page) return;
  $("archive-pager").hidden = false;
  $("archive-prev").disabled = browseOffset === 0;
  $("archive-next").disabled = browseOffset + page.rows.length >= page.total;
  const last = browseOffset + page.rows.length;
  const what = filter ? ` with ${filter}` : "";
  showRows(page.rows, page.total ? `${kind}s ${browseOffset + 1}–${last} of ${page.total}${what}` : (filter ? `no ${kind}s with ${filter}` : "nothing stored yet"));
}

async function loadArchiveVocabs() {
  const response = await fetch("/vocab");
  if (!response.ok) return;
  const { vocabularies } = await response.json();
  const select = $("archive-vocab");
  const chosen = select.value || $("vocab-select").value;
  select.innerHTML = "";
  for (const v of vocabularies) select.add(new Option(`${v.name} (${v.num_labels} labels)`, v.name));
  if (chosen) select.value = chosen;
}

async function labelArchive() {
  clearError();
  const vocab = $("archive-vocab").value;
  if (!vocab) { showError("Choose a vocabulary (create one under Classify)."); return; }
  $("status").textContent = "Labelling the archive…";
  $("archive-label").disabled = true;
  labelled = [];
  try {
    const response = await fetch("/archive/labels", {
      method: "POST", headers: { "content-type": "application/json", ...authHeaders() },
      body: JSON.stringify({ vocab, top_k: 1 }),
    });
    if (!response.ok) { showError(await readError(response)); return; }
    for await (const line of ndjsonLines(response)) {
      if (line.error) { showError(`Labelling stopped: ${line.error}`); break; }
      if (line.done) { $("status").textContent = `Labelled ${line.rows} videos in ${line.seconds} s.`; break; }
      const top = line.predictions[0] || { label: "", probability: 0 };
      labelled.push({ name: line.name, names: line.names || [line.name], id: line.id, label: top.label, probability: top.probability });
    }
    showLabels();
  } catch (err) {
    showError(`Could not reach the server (${err}).`);
  } finally {
    $("archive-label").disabled = false;
  }
}

function showLabels() {
  const rows = [...labelled].sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return sortDown ? -order : order;
  });
  const body = $("archive-labels").tBodies[0];
  body.innerHTML = "";
  for (const r of rows) {
    const row = body.insertRow();
    row.insertCell().textContent = r.name.split("/").pop();
    row.cells[0].title = r.names.join("\n");
    row.insertCell().textContent = r.label;
    row.insertCell().textContent = `${(100 * r.probability).toFixed(1)}%`;
  }
  $("archive-labels").hidden = rows.length === 0;
  const quote = (v) => `"${String(v).replaceAll('"', '""')}"`;
  const csv = ["id,name,names,label,probability", ...rows.map((r) => [r.id, r.name, r.names.join(";"), r.label, r.probability].map(quote).join(","))].join("\n");
  const link = $("archive-csv");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([csv + "\n"], { type: "text/csv" }));
  link.hidden = rows.length === 0;
}

function sortBy(key) {
  sortDown = sortKey === key ? !sortDown : key === "probability";
  sortKey = key;
  showLabels();
}

$("tab-classify").addEventListener("click", () => showTab("classify"));
$("tab-archive").addEventListener("click", () => showTab("archive"));
$("archive-search").addEventListener("click", searchArchive);
$("archive-q").addEventListener("keydown", (e) => { if (e.key === "Enter") searchArchive(); });
$("archive-browse").addEventListener("click", () => browse(0));
$("archive-prev").addEventListener("click", () => browse(browseOffset - PAGE));
$("archive-next").addEventListener("click", () => browse(browseOffset + PAGE));
$("archive-label").addEventListener("click", labelArchive);
$("archive-filter").addEventListener("change", () => { if (!$("archive-pager").hidden) browse(0); });
for (const button of document.querySelectorAll("#archive-labels th button")) {
  button.addEventListener("click", () => sortBy(button.dataset.sort));
}
