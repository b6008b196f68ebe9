// tuneforge web UI: a client of the server's HTTP API (the OpenAI /v1 routes and the read-only /tf/v1 ones).
// Everything it shows comes from the server; the page keeps only the chosen file and job in the URL hash
// (#file=...&job=...), so reloading it, or opening the link elsewhere, shows the same state.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {  // what the server last said; re-rendered on a language switch
  base: null, files: [], fileId: null, preview: null, doctor: null, options: null, plan: null, datasets: [],
  mapping: null, pending: null,  // pending: a refused upload whose columns the person may map by hand
  job: null, jobs: [], events: [], stage: "supervised", method: "lora", poll: null,
};

// ---------- HTTP ----------
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(t("error.network", {why: err.message}));
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}
const post = (path, body) => api(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify(body || {})});

function hashState() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}
function setHash(values) {
  const next = {...hashState(), ...values};
  Object.keys(next).forEach((k) => next[k] == null && delete next[k]);
  history.replaceState(null, "", "#" + new URLSearchParams(next).toString());
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return node;
}
function showError(id, message) {
  const box = $(id);
  box.hidden = !message;
  box.textContent = message || "";
  return box;
}
const human = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + "B" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M"
  : n >= 1e3 ? (n / 1e3).toFixed(0) + "K" : String(n);
const bytes = (n) => n >= 2 ** 30 ? (n / 2 ** 30).toFixed(1) + " GiB" : (n / 2 ** 20).toFixed(0) + " MiB";

// ---------- 1. Model ----------
// S.model: another base chosen to fine-tune (its facts from /tf/v1/models/describe); null = the served base.
function renderModel() {
  const b = S.base;
  if (!b) return;
  const m = S.model;
  const template = m ? (m.chat_template ? t("model.has_own_template") : m.chat_template === false
    ? t("model.no_template") : "?") : b.chat_template ? t("model.has_template", {name: b.template})
    : t("model.no_template");
  const facts = [
    ["model.id", m ? m.id : b.id], ["model.size", t("model.params", {n: human(m ? m.parameters : b.parameters)})],
    ["model.context", (m || b).context_length ? t("model.tokens", {n: (m || b).context_length}) : "?"],
    ["model.template", template],
    ["model.device", `${b.device} · ${m ? t("model.own_copy") : b.dtype.replace("torch.", "")}`],
  ];
  $("model-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, t(k)), el("dd", {}, v))));
  $("model-pick").hidden = !b.other_bases;
  $("model-list").replaceChildren(...(b.suggestions || []).map((name) => el("option", {value: name})));
  $("model-reset").hidden = !m;
}
const modelId = () => (S.model ? S.model.id : S.base.id);

async function useModel() {
  const name = $("model-input").value.trim();
  if (!name) return;
  showError("model-error", "");
  $("model-use").disabled = true;
  try {
    S.model = name === S.base.id ? null : await api(`/tf/v1/models/describe?name=${encodeURIComponent(name)}`);
    renderModel();
    schedulePlan();
  } catch (err) {
    showError("model-error", err.message);
  } finally {
    $("model-use").disabled = false;
  }
}
function resetModel() {
  S.model = null;
  $("model-input").value = "";
  showError("model-error", "");
  renderModel();
  schedulePlan();
}

// ---------- 2. Data ----------
async function loadFiles() {
  S.files = (await api("/v1/files")).data;
  renderFiles();
}
function renderFiles() {
  const select = $("file-select");
  const options = S.files.map((f) => el("option", {value: f.id}, `${f.filename} (${f.status_details || f.id})`));
  select.replaceChildren(el("option", {value: ""}, t("data.none")), ...options);
  select.value = S.fileId || "";
  const validation = $("set-validation");
  const kept = validation.value;
  validation.replaceChildren(el("option", {value: ""}, t("settings.no_validation")),
    ...S.files.filter((f) => f.id !== S.fileId).map((f) => el("option", {value: f.id}, f.filename)));
  validation.value = S.files.some((f) => f.id === kept && f.id !== S.fileId) ? kept : "";
}

async function upload(file) {
  showError("data-error", "");
  S.pending = S.mapping = null;
  renderMapping();
  $("data-status").textContent = t("data.uploading", {name: file.name});
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  try {
    const saved = await api("/v1/files", {method: "POST", body: form});
    await loadFiles();
    await chooseFile(saved.id);
  } catch (err) {
    $("data-status").textContent = "";
    if (!/cannot detect the data format/.test(err.message)) {
      showRefusal(err.message);
    } else {  // the person can say which column holds what (mapping.js)
      showError("data-error", t("data.undetected", {name: file.name}));
      S.pending = file;
      S.mapping = {file_id: null, format: null, columns: {}, available: await columnsOf(file),
                   formats: ["alpaca", "sharegpt", "openai", "text", "pairwise", "kto"]};
      renderMapping();
    }
  } finally {
    $("file-input").value = "";
  }
}

function showRefusal(message) {
  // The server names each bad line: "name: 2 bad row(s); fix them and upload again. line 2: ...; line 3: ..."
  const box = showError("data-error", "");
  box.hidden = false;
  const lines = message.split(/; (?=line \d+)|\. (?=line \d+)/);
  box.append(el("strong", {}, t("data.refused") + " "), lines[0]);
  if (lines.length > 1) box.append(el("ul", {}, lines.slice(1).map((l) => el("li", {}, l))));
}

async function chooseFile(fileId) {
  S.fileId = fileId || null;
  setHash({file: S.fileId});
  $("file-select").value = S.fileId || "";
  S.preview = S.doctor = S.options = S.plan = S.mapping = S.pending = null;
  $("data-summary").hidden = true;
  renderMapping();
  renderFiles();
  ["step-method", "step-settings"].forEach((id) => { $(id).hidden = true; });
  if (!fileId) return;
  $("data-status").textContent = t("data.loading");
  showError("data-error", "");
  try {
    [S.preview, S.doctor, S.options, S.mapping] = await Promise.all([
      api(`/tf/v1/files/${fileId}/preview?n=3`), api(`/tf/v1/files/${fileId}/doctor`),
      api(`/tf/v1/options?file_id=${fileId}`), api(`/tf/v1/files/${fileId}/mapping`).catch(() => null)]);
  } catch (err) {
    $("data-status").textContent = "";
    showError("data-error", err.message);
    return;
  }
  $("data-status").textContent = "";
  S.stage = null;  // the first stage the file's data fit (the server lists OpenAI's method types first)
  renderData();
  renderMapping();
  renderOptions();
  if (!S.job) ["step-method", "step-settings"].forEach((id) => { $(id).hidden = false; });
  schedulePlan();
}

function renderData() {
  const p = S.preview;
  if (!p) return;
  $("data-summary").hidden = false;
  $("data-format").textContent = t("data.format", {name: p.filename, rows: p.rows, format: p.format, stage: p.stage});
  $("samples").replaceChildren(...p.samples.map((s) => el("div", {class: "sample"},
    el("div", {class: "src"}, `${s.source} · ${t("data.tokens", {n: s.tokens})}`
                              + (s.truncated ? ` · ${t("data.truncated")}` : "")),
    el("pre", {}, s.segments.map((g) => el("span", {class: g.trained ? "trained" : "untrained"}, g.text))))));
  renderDoctor();
}

function renderDoctor() {
  const findings = (S.doctor && S.doctor.findings) || [];
  const where = (f) => (f.examples || []).slice(0, 3)
    .map((e) => (e.sources || [e.source]).filter(Boolean).join(", ")).filter(Boolean).join(" | ");
  const items = findings.map((f) => el("li", {class: `f-${f.severity}`},
    el("span", {class: "sev"}, f.severity), f.summary, where(f) ? el("div", {class: "where"}, where(f)) : ""));
  $("doctor").replaceChildren(...(items.length ? items : [el("li", {class: "f-ok"}, t("data.clean"))]));
}

// ---------- 3. Method and stage ----------
function renderOptions() {
  const o = S.options;
  if (!o) return;
  // Reinforcement is offered for prompts, whose other columns (an answer) are what a grader compares with.
  const stages = o.stages.filter((s) => s.fits_data && (s.method !== "reinforcement" || o.kind === "prompts"));
  if (!stages.some((s) => s.method === S.stage)) S.stage = stages.length ? stages[0].method : S.stage;
  $("stages").replaceChildren(...stages.map((s) => el("label", {class: "choice"},
    el("input", {type: "radio", name: "stage", value: s.method, ...(s.method === S.stage ? {checked: ""} : {}),
                 onchange: () => { S.stage = s.method; renderMethods(); renderGrader(); schedulePlan(); }}),
    el("span", {}, el("strong", {}, `${s.stage.toUpperCase()}`), el("small", {}, s.description)))));
  renderMethods();
  renderGrader();
}

// ---------- 3b. The grader of a reinforcement job (OpenAI's string_check / text_similarity graders) ----------
function renderGrader() {
  const show = S.stage === "reinforcement";
  $("grader").hidden = !show;
  if (!show) return;
  const select = $("grader-reference");
  const kept = select.value;
  const columns = ((S.mapping && S.mapping.available) || []).filter((c) => !["messages", "conversations", "tools",
                                                                           "system"].includes(c));
  select.replaceChildren(...columns.map((c) => el("option", {value: c}, c)));
  select.value = columns.includes(kept) ? kept : columns.includes("answer") ? "answer" : columns[0] || "";
}
function grader() {
  const column = $("grader-reference").value;
  const compare = $("grader-compare").value;
  const common = {input: "{{sample.output_text}}", reference: `{{item.${column}}}`};
  return ["eq", "ilike"].includes(compare)
    ? {type: "string_check", name: "reference", operation: compare, ...common}
    : {type: "text_similarity", name: "reference", evaluation_metric: compare, ...common};
}

function renderMethods() {
  const stage = S.options.stages.find((s) => s.method === S.stage);
  const allowed = S.options.methods.filter((m) => stage.methods.includes(m.name));
  if (!allowed.some((m) => m.name === S.method)) S.method = allowed.some((m) => m.name === "lora") ? "lora"
    : allowed[0].name;
  const select = $("method-select");
  select.replaceChildren(...allowed.map((m) => el("option", {value: m.name}, m.name)));
  select.value = S.method;
  renderMethodAbout();
}
function renderMethodAbout() {
  const m = S.options.methods.find((x) => x.name === S.method);
  $("method-about").textContent = m ? `${m.description} (${t(m.artifact === "adapter" ? "method.adapter"
                                                                                     : "method.model")})` : "";
}

// ---------- 4. Settings and the plan ----------
function number(id) {
  const raw = $(id).value.trim();
  return raw === "" || raw === "auto" ? "auto" : Number(raw);
}
function overrides() {
  const out = {};
  $("set-overrides").value.split("\n").forEach((line, i) => {
    const text = line.trim();
    if (!text || text.startsWith("#")) return;
    const at = text.indexOf("=");
    if (at < 1) throw new Error(t("settings.bad_line", {n: i + 1}));
    const key = text.slice(0, at).trim();
    const value = text.slice(at + 1).trim();
    out[key] = /^-?\d+(\.\d+)?(e-?\d+)?$/i.test(value) ? Number(value) : value === "true" ? true
      : value === "false" ? false : value;
  });
  return out;
}
function jobRequest() {
  const hp = {n_epochs: number("set-epochs"), learning_rate_multiplier: number("set-lr"),
              batch_size: number("set-batch")};
  return {model: modelId(), training_file: S.fileId, validation_file: $("set-validation").value || null,
          suffix: $("set-suffix").value.trim() || null,
          method: {type: S.stage, [S.stage]: {hyperparameters: hp,
                                               ...(S.stage === "reinforcement" ? {grader: grader()} : {})}},
          tuneforge: {"method.type": S.method, ...overrides()}};
}

let planTimer = null;
function schedulePlan() {
  clearTimeout(planTimer);
  planTimer = setTimeout(loadPlan, 250);
}
async function loadPlan() {
  if (!S.fileId || !S.options) return;
  try {
    S.plan = await post("/tf/v1/plan", jobRequest());
    showError("plan-error", "");
  } catch (err) {
    S.plan = null;
    showError("plan-error", err.message);
  }
  renderPlan();
}
function renderPlan() {
  const p = S.plan;
  $("train").disabled = !p;
  $("plan-yaml").textContent = p ? p.yaml : "";
  const chosen = (p && p.resolved.chosen) || {};
  $("auto-epochs").textContent = chosen.epochs ? t("settings.auto", {value: chosen.epochs}) : "";
  $("auto-batch").textContent = chosen.batch_size ? t("settings.auto", {value: chosen.batch_size}) : "";
  $("auto-lr").textContent = p ? t("settings.lr_is", {value: p.resolved.learning_rate.toExponential(2)}) : "";
  const m = p && p.memory;
  $("plan-memory").textContent = m ? t("settings.memory", {trainable: human(m.trainable_parameters),
    share: (100 * m.trainable_share).toFixed(m.trainable_share < 0.01 ? 2 : 1) + "%", memory: bytes(m.bytes),
    device: p.device}) : "";
  const link = $("yaml-download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = p ? URL.createObjectURL(new Blob([p.yaml], {type: "text/yaml"})) : "#";
}

async function startJob() {
  $("train").disabled = true;
  try {
    const job = await post("/v1/fine_tuning/jobs", jobRequest());
    showJob(job.id);
    loadJobs();
  } catch (err) {
    showError("plan-error", err.message);
    $("train").disabled = false;
  }
}

// ---------- 5. Train ----------
const ACTIVE = ["validating_files", "queued", "running", "pausing"];

function showJob(jobId) {
  setHash({job: jobId});
  S.job = {id: jobId, status: "queued"};
  S.events = [];
  ["step-method", "step-settings"].forEach((id) => { $(id).hidden = true; });
  $("step-train").hidden = false;
  $("step-chat").hidden = false;
  $("step-train").scrollIntoView({block: "start"});
  clearTimeout(S.poll);
  pollJob();
}

async function pollJob() {
  const jobId = S.job && S.job.id;
  if (!jobId) return;
  try {
    const [job, events] = await Promise.all([api(`/v1/fine_tuning/jobs/${jobId}`),
      api(`/v1/fine_tuning/jobs/${jobId}/events?limit=1000`)]);
    if (!S.job || S.job.id !== jobId) return;
    S.job = job;
    S.events = events.data.slice().reverse();  // oldest first
    showError("job-error", job.error ? `${job.error.code}: ${job.error.message}` : "");
  } catch (err) {
    showError("job-error", err.message);
  }
  renderJob();
  if (S.job && ACTIVE.includes(S.job.status)) S.poll = setTimeout(pollJob, 1000);
  else loadJobs().catch(() => {});
}

function metrics(key = "train_loss") {
  return S.events.filter((e) => e.type === "metrics" && e.data && e.data[key] != null).map((e) => e.data);
}

function renderJob() {
  const job = S.job;
  if (!job) return;
  const badge = $("job-status");
  badge.className = `badge ${job.status}`;
  badge.textContent = t(`status.${job.status}`);
  badge.dataset.status = job.status;
  $("job-id").textContent = job.id;
  const points = metrics();
  const last = points[points.length - 1];
  const total = last && last.total_steps;
  const share = job.status === "succeeded" ? 1 : total ? last.step / total : 0;
  $("job-bar").style.width = `${(100 * share).toFixed(1)}%`;
  $("job-bar").parentElement.setAttribute("aria-valuenow", String(Math.round(100 * share)));
  $("job-steps").textContent = job.status === "succeeded" ? t("train.done", {model: job.fine_tuned_model})
    : last ? t("train.step", {step: last.step, total: total || "?"}) : t("train.waiting");
  const left = job.estimated_finish ? Math.max(0, job.estimated_finish - Date.now() / 1000) : null;
  $("job-eta").textContent = left != null ? t("train.eta", {time: left < 90 ? `${Math.round(left)} s`
                                                                            : `${Math.round(left / 60)} min`}) : "";
  $("job-pause").disabled = job.status !== "running";
  $("job-resume").disabled = job.status !== "paused";
  $("job-cancel").disabled = !ACTIVE.includes(job.status) && job.status !== "paused";
  drawLoss(points, metrics("valid_loss"));
  const log = $("job-log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = S.events.map((e) => `${new Date(e.created_at * 1000).toLocaleTimeString()}  ${e.message}`)
    .join("\n");
  if (atEnd) log.scrollTop = log.scrollHeight;
  renderChatModels();
  document.dispatchEvent(new CustomEvent("tf:job", {detail: job}));  // evaluate.js follows the shown job
}

// An SVG element with attributes (and text): the charts of every step draw with it.
function svgNode(tag, attrs, text) {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  Object.entries(attrs).forEach(([k, v]) => n.setAttribute(k, v));
  if (text != null) n.textContent = text;
  return n;
}

function drawLoss(points, valid = []) {
  const svg = $("loss-chart");
  const W = 600, H = 220, L = 48, R = 12, T = 12, B = 28;
  const node = svgNode;
  const parts = [node("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}),
                 node("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B})];
  if (points.length) {
    const steps = points.map((p) => p.step);
    const losses = points.map((p) => p.train_loss).concat(valid.map((p) => p.valid_loss));
    const maxStep = Math.max(points[points.length - 1].total_steps || 0, ...steps, ...valid.map((p) => p.step), 1);
    let lo = Math.min(...losses), hi = Math.max(...losses);
    if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
    // A loss falling by more than 20x reads better on a log scale: the late steps would be a flat line otherwise.
    const log = lo > 0 && hi / lo > 20;
    const f = log ? Math.log : (v) => v;
    const x = (s) => L + (W - L - R) * (s / maxStep);
    const y = (v) => T + (H - T - B) * (1 - (f(v) - f(lo)) / (f(hi) - f(lo)));
    svg.dataset.scale = log ? "log" : "linear";
    const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.step).toFixed(1)},${y(p.train_loss).toFixed(1)}`);
    parts.push(node("path", {class: "line", d: path.join(" ")}));
    if (points.length === 1) parts.push(node("circle", {cx: x(steps[0]), cy: y(losses[0]), r: 3, fill: "#2563eb"}));
    if (valid.length) {
      const vpath = valid.map((p, i) => `${i ? "L" : "M"}${x(p.step).toFixed(1)},${y(p.valid_loss).toFixed(1)}`);
      parts.push(node("path", {class: "line valid", d: vpath.join(" ")}),
                 ...valid.map((p) => node("circle", {class: "valid", cx: x(p.step).toFixed(1),
                                                     cy: y(p.valid_loss).toFixed(1), r: 3})));
    }
    parts.push(node("text", {x: L - 6, y: T + 10, "text-anchor": "end"}, hi.toFixed(2)),
               node("text", {x: L - 6, y: H - B, "text-anchor": "end"}, lo.toFixed(2)),
               node("text", {x: L, y: H - 8}, "0"),
               node("text", {x: W - R, y: H - 8, "text-anchor": "end"}, `step ${maxStep}`));
    if (log) parts.push(node("text", {x: W - R, y: T + 10, "text-anchor": "end"}, "log scale"));
  }
  svg.dataset.points = String(points.length);
  svg.dataset.validPoints = String(valid.length);
  $("loss-legend").hidden = !valid.length;
  svg.replaceChildren(...parts);
}

async function jobAction(action) {
  if (action === "cancel" && !confirm(t("train.confirm_cancel"))) return;
  try {
    S.job = await post(`/v1/fine_tuning/jobs/${S.job.id}/${action}`);
    renderJob();
    clearTimeout(S.poll);
    pollJob();
  } catch (err) {
    showError("job-error", err.message);
  }
}

function newJob() {
  clearTimeout(S.poll);
  S.job = null;
  S.events = [];
  setHash({job: null});
  $("job-select").value = "";
  $("step-train").hidden = true;
  $("step-chat").hidden = true;
  if (S.fileId) ["step-method", "step-settings"].forEach((id) => { $(id).hidden = false; });
  schedulePlan();
}

async function loadJobs() {
  S.jobs = (await api("/v1/fine_tuning/jobs?limit=20")).data;
  renderJobs();
}
function renderJobs() {
  const select = $("job-select");
  const options = (S.jobs || []).map((j) => el("option", {value: j.id},
    `${j.user_provided_suffix || j.id.slice(6, 14)} · ${t(`status.${j.status}`)} · `
    + new Date(j.created_at * 1000).toLocaleString()));
  select.replaceChildren(el("option", {value: ""}, t("jobs.none")), ...options);
  select.value = S.job ? S.job.id : "";
}
async function openJob(jobId) {
  if (!jobId) return newJob();
  showJob(jobId);
  const row = await api(`/v1/fine_tuning/jobs/${jobId}`).catch(() => null);
  if (row && row.training_file !== S.fileId) await chooseFile(row.training_file);
}

// ---------- 6. Chat ----------
function tunedModel() {
  return S.job && S.job.status === "succeeded" ? S.job.fine_tuned_model : null;
}
// The base beside the fine-tuned model: the one the shown job fine-tuned (another base, with --other-bases).
function chatBase() {
  return (S.job && S.job.model) || (S.base ? S.base.id : "");
}
function renderChatModels() {
  const tuned = tunedModel();
  $("answer-tuned").querySelector(".model-id").textContent = tuned || t("chat.not_ready");
  $("answer-base").querySelector(".model-id").textContent = chatBase();
  $("chat-send").disabled = !S.base;
}

async function streamAnswer(model, prompt, box) {
  const text = box.querySelector(".text");
  const vote = box.querySelector(".vote");
  text.textContent = "";
  vote.replaceChildren();
  box.querySelectorAll(".correction").forEach((f) => f.remove());
  box.dataset.done = "false";
  const response = await fetch("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model, stream: true, temperature: 0, max_tokens: 48,
                          messages: [{role: "user", content: prompt}]})});
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    text.textContent = (body.error && body.error.message) || response.statusText;
    box.dataset.done = "error";
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", completionId = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      completionId = chunk.id;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) text.textContent += delta.content;
    }
  }
  box.dataset.done = "true";
  vote.dataset.completionId = completionId || "";
  if (S.base.log_requests && completionId) vote.append(...voteButtons(completionId, vote));
}

function voteButtons(completionId, vote) {
  const send = async (rating, button) => {
    try {
      await post("/v1/feedback", {completion_id: completionId, rating});
      vote.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      vote.querySelector(".said").textContent = t("chat.thanks");
    } catch (err) {
      vote.querySelector(".said").textContent = err.message;
    }
  };
  const up = el("button", {type: "button", class: "up", "aria-label": t("chat.good"), title: t("chat.good"),
                           "aria-pressed": "false"}, "▲ " + t("chat.good"));
  const down = el("button", {type: "button", class: "down", "aria-label": t("chat.bad"), title: t("chat.bad"),
                             "aria-pressed": "false"}, "▼ " + t("chat.bad"));
  up.addEventListener("click", () => send(1, up));
  down.addEventListener("click", () => send(-1, down));
  const fix = el("button", {type: "button", class: "fix", "aria-expanded": "false"}, "✎ " + t("chat.correct"));
  fix.addEventListener("click", () => toggleCorrection(completionId, vote, fix));
  return [up, down, fix, el("span", {class: "said"})];
}

// A correction: the answer the model should have given, stored with the completion (`tuneforge data from-feedback`
// turns it into an SFT row, or a DPO pair against the logged answer).
function toggleCorrection(completionId, vote, button) {
  const open = vote.parentElement.querySelector(".correction");
  if (open) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const area = el("textarea", {rows: "3", "aria-label": t("chat.correction_label"), spellcheck: "true"});
  area.value = vote.parentElement.querySelector(".text").textContent;
  const save = el("button", {type: "submit", class: "primary"}, t("chat.save_correction"));
  const form = el("form", {class: "correction"}, el("label", {}, el("span", {class: "hint"},
    t("chat.correction_label")), area), save);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await post("/v1/feedback", {completion_id: completionId, correction: area.value});
      form.remove();
      button.setAttribute("aria-expanded", "false");
      vote.querySelector(".said").textContent = t("chat.correction_saved");
    } catch (err) {
      vote.querySelector(".said").textContent = err.message;
    }
  });
  vote.after(form);
  button.setAttribute("aria-expanded", "true");
  area.focus();
}

async function chat(event) {
  event.preventDefault();
  const prompt = $("chat-input").value.trim();
  if (!prompt) return;
  $("chat-send").disabled = true;
  const tuned = tunedModel();
  const jobs = [streamAnswer(chatBase(), prompt, $("answer-base"))];
  if (tuned) jobs.push(streamAnswer(tuned, prompt, $("answer-tuned")));
  try {
    await Promise.all(jobs);
  } finally {
    $("chat-send").disabled = false;
  }
}

// ---------- start ----------
function renderAll() {
  renderModel();
  renderFiles();
  renderDatasets();
  renderData();
  renderMapping();
  renderOptions();
  renderPlan();
  renderJob();
  renderChatModels();
  renderJobs();
  document.dispatchEvent(new CustomEvent("tf:render"));  // the other scripts re-render (language switch)
}

async function start() {
  applyLanguage();
  $("lang").addEventListener("click", () => { switchLanguage(); renderAll(); });
  $("file-input").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  $("file-select").addEventListener("change", (e) => chooseFile(e.target.value));
  $("dataset-import").addEventListener("click", importDataset);
  $("model-use").addEventListener("click", useModel);
  $("model-input").addEventListener("keydown", (e) => { if (e.key === "Enter") useModel(); });
  $("model-reset").addEventListener("click", resetModel);
  $("map-format").addEventListener("change", renderRoles);
  $("map-apply").addEventListener("click", applyMapping);
  $("set-validation").addEventListener("change", schedulePlan);
  ["grader-reference", "grader-compare"].forEach((id) => $(id).addEventListener("change", schedulePlan));
  $("method-select").addEventListener("change", (e) => { S.method = e.target.value; renderMethodAbout();
                                                         schedulePlan(); });
  ["set-epochs", "set-lr", "set-batch", "set-suffix", "set-overrides"].forEach((id) => {
    $(id).addEventListener("input", () => {
      try {
        overrides();
        schedulePlan();
      } catch (err) {
        showError("plan-error", err.message);
        $("train").disabled = true;
      }
    });
  });
  $("train").addEventListener("click", startJob);
  $("job-pause").addEventListener("click", () => jobAction("pause"));
  $("job-resume").addEventListener("click", () => jobAction("resume"));
  $("job-cancel").addEventListener("click", () => jobAction("cancel"));
  $("job-new").addEventListener("click", newJob);
  $("chat-form").addEventListener("submit", chat);
  $("train").disabled = true;
  S.base = await api("/tf/v1/base");
  renderModel();
  renderChatModels();
  await loadFiles();
  await loadDatasets().catch((err) => showError("data-error", err.message));
  await loadJobs();
  $("job-select").addEventListener("change", (e) => openJob(e.target.value));
  const {file, job} = hashState();
  if (job) {
    await openJob(job);
  } else if (file) {
    await chooseFile(file);
  }
  document.body.dataset.ready = "true";
}

// After every script of the page has loaded (mapping.js, evaluate.js and runs.js define what start() wires up).
window.addEventListener("DOMContentLoaded", () => start().catch((err) => showError("data-error", err.message)));
