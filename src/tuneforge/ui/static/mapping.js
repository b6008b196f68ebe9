// tuneforge web UI, step 2's other ways to a training file: a dataset registered in the server's dataset_info.json,
// and a column mapping fixed by hand (for a stored file, or for an upload whose format cannot be detected). Each
// makes a NEW file on the server (routes_data); the person's file is never changed. Uses app.js's helpers and state.
"use strict";

async function loadDatasets() {
  S.datasets = (await api("/tf/v1/datasets")).data;
  renderDatasets();
}
function renderDatasets() {
  $("dataset-row").hidden = !S.datasets.length;
  const label = (d) => [d.formatting, d.ranking ? "pairs" : "", d.kto ? "kto" : "", d.local ? "" : t("data.hub_only")]
    .filter(Boolean).join(", ");
  $("dataset-select").replaceChildren(...S.datasets.map((d) => el("option", {value: d.name,
    ...(d.local ? {} : {disabled: ""})}, `${d.name} (${label(d)})`)));
}
async function importDataset() {
  const name = $("dataset-select").value;
  if (!name) return;
  showError("data-error", "");
  $("data-status").textContent = t("data.importing", {name});
  try {
    const saved = await post(`/tf/v1/datasets/${encodeURIComponent(name)}/import`);
    await loadFiles();
    await chooseFile(saved.id);
  } catch (err) {
    $("data-status").textContent = "";
    showError("data-error", err.message);
  }
}

const ROLES_OF = {
  alpaca: ["prompt", "query", "response", "system", "history"], sharegpt: ["messages", "system", "tools"],
  openai: ["messages", "tools"], text: ["text"], pairwise: ["prompt", "query", "chosen", "rejected", "messages"],
  kto: ["prompt", "query", "response", "kto_tag", "messages"], auto: ["prompt", "query", "response", "messages", "text"],
};

function renderMapping() {
  const m = S.mapping;
  $("mapping-box").hidden = !m;
  if (!m) return;
  const pairs = Object.entries(m.columns || {}).map(([role, col]) => `${t("role." + role)} ← ${col}`);
  $("mapping-now").textContent = m.format ? t("data.mapping", {format: m.format, pairs: pairs.join(", ")})
    : t("data.no_format", {columns: m.available.join(", ") || "?"});
  const fmt = $("map-format");
  const base = (m.format || "alpaca").split("+")[0];
  const kind = (m.format || "").includes("pairwise") ? "pairwise" : (m.format || "").includes("kto") ? "kto" : base;
  if (!fmt.options.length || fmt.dataset.file !== (m.file_id || "pending")) {
    fmt.replaceChildren(...m.formats.filter((f) => f !== "auto").map((f) => el("option", {value: f}, f)));
    fmt.value = m.formats.includes(kind) ? kind : "alpaca";
    fmt.dataset.file = m.file_id || "pending";
    $("mapping-edit").open = !m.format;  // open by itself only when the format could not be detected
  }
  $("map-columns").replaceChildren(...m.available.map((c) => el("option", {value: c})));
  renderRoles();
}
function renderRoles() {
  const m = S.mapping;
  const roles = ROLES_OF[$("map-format").value] || ROLES_OF.auto;
  const kept = Object.fromEntries([...$("map-roles").querySelectorAll("input")].map((i) => [i.name, i.value]));
  $("map-roles").replaceChildren(...roles.map((role) => el("label", {},
    el("span", {}, t("role." + role)),
    el("input", {name: role, list: "map-columns", autocomplete: "off", spellcheck: "false",
                 value: kept[role] != null ? kept[role] : (m.columns || {})[role] || ""}))));
}
function chosenMapping() {
  const columns = {};
  $("map-roles").querySelectorAll("input").forEach((i) => { if (i.value.trim()) columns[i.name] = i.value.trim(); });
  return {format: $("map-format").value, columns};
}
async function applyMapping() {
  const body = chosenMapping();
  showError("data-error", "");
  $("map-apply").disabled = true;
  try {
    let saved;
    if (S.pending) {
      const form = new FormData();
      form.append("file", S.pending, S.pending.name);
      form.append("format", body.format);
      form.append("columns", JSON.stringify(body.columns));
      saved = await api("/tf/v1/files/mapped", {method: "POST", body: form});
      S.pending = null;
    } else {
      saved = await post(`/tf/v1/files/${S.fileId}/remap`, body);
    }
    await loadFiles();
    await chooseFile(saved.id);
  } catch (err) {
    showError("data-error", err.message);
  } finally {
    $("map-apply").disabled = false;
  }
}

// The columns of a refused upload, read in the browser from its first row (JSONL, JSON array, CSV header).
async function columnsOf(file) {
  const head = await file.slice(0, 1 << 20).text();
  try {
    if (/\.csv$/i.test(file.name)) return head.split(/\r?\n/)[0].split(",").map((c) => c.trim().replace(/^"|"$/g, ""));
    if (/\.jsonl$/i.test(file.name)) return Object.keys(JSON.parse(head.split(/\r?\n/)[0]));
    const rows = JSON.parse(await file.text());
    return Object.keys(Array.isArray(rows) ? rows[0] : rows);
  } catch (err) {
    return [];
  }
}
