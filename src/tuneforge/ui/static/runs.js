// Step 8, Runs: the server's run registry (GET /tf/v1/runs), one run opened with its config, loss curve, metrics
// and lineage (GET /tf/v1/runs/{id}), and what can be done with it: resume (through the jobs scheduler), export
// (merge + parity check) or a new run from its config (fills steps 2-4 of the page; the person starts it there).
// A client of the HTTP API like app.js, whose helpers ($, S, api, post, el, showError, t, ...) it uses.
"use strict";

addText({
  en: {
    "runs.title": "Runs",
    "runs.hint": "Every run this server's registry recorded for you: trainings, their exports and continuations.",
    "runs.refresh": "Refresh", "runs.kind": "Show", "runs.kind_all": "all runs", "runs.kind_train": "trainings",
    "runs.kind_export": "exports", "runs.table": "Recorded runs", "runs.none": "No runs yet: train a job above.",
    "runs.loading": "Loading runs…",
    "runs.col.run": "Run", "runs.col.status": "Status", "runs.col.what": "Stage · method", "runs.col.loss": "Loss",
    "runs.col.eval_loss": "Eval loss", "runs.col.steps": "Steps", "runs.col.created": "Created",
    "runs.col.lineage": "Lineage",
    "runs.open_label": "Open run {id}", "runs.from": "from {id}", "runs.children": "→ {n}",
    "runs.children_label": "{n} later run(s)", "runs.job": "job {status}",
    "runs.status.running": "running", "runs.status.succeeded": "succeeded", "runs.status.failed": "failed",
    "runs.status.interrupted": "interrupted", "runs.status.cancelled": "cancelled",
    "runs.kind.train": "training", "runs.kind.export": "export", "runs.kind.eval": "evaluation",
    "runs.close": "Close", "runs.id": "Run id", "runs.fjob": "Fine-tuning job", "runs.base": "Base model",
    "runs.data": "Data", "runs.duration": "Duration", "runs.ended": "Ended", "runs.model": "Model id",
    "runs.error": "Error",
    "runs.actions": "Actions", "runs.resume": "Resume", "runs.export": "Export", "runs.dtype": "Export dtype",
    "runs.new_run": "New run from this config",
    "runs.exporting": "Exporting: merging the model and checking it against the run's model…",
    "runs.exported": "Exported to {folder} ({dtype}). Parity check passed: max |Δlogit| {diff} on {samples} " +
      "samples / {tokens} tokens (tolerance {tol}).",
    "runs.export_failed": "Export failed the parity check: do not use it.",
    "runs.open_export": "Open the export run", "runs.resumed": "Job {job} resumed: follow it in step 5.",
    "runs.continued": "Job {old} continues as {job} from its checkpoint step {step}: follow it in step 5.",
    "runs.filled": "Steps 2–4 now hold this run's file and settings: check them and start training.",
    "runs.skipped": "Not carried over (the box takes key=value only): {keys}",
    "runs.chart": "Loss", "runs.train_loss": "training loss", "runs.eval_loss": "eval loss",
    "runs.no_points": "No loss was logged.", "runs.metrics": "Final metrics", "runs.lineage": "Lineage",
    "runs.this_run": "this run", "runs.evals": "Evaluations", "runs.artifacts": "Artifacts",
    "runs.missing": "gone from disk", "runs.config": "Config (YAML)", "runs.parity": "Parity check",
    "runs.parity_ok": "passed: max |Δlogit| {diff} vs the run's model", "runs.parity_bad": "FAILED",
    "runs.nothing": "none",
  },
  zh: {
    "runs.title": "运行记录",
    "runs.hint": "服务器登记册中属于你的所有运行：训练、导出和续训。",
    "runs.refresh": "刷新", "runs.kind": "显示", "runs.kind_all": "全部", "runs.kind_train": "训练",
    "runs.kind_export": "导出", "runs.table": "已记录的运行", "runs.none": "还没有运行：先在上面训练一个任务。",
    "runs.loading": "正在加载运行记录…",
    "runs.col.run": "运行", "runs.col.status": "状态", "runs.col.what": "阶段 · 方法", "runs.col.loss": "损失",
    "runs.col.eval_loss": "验证损失", "runs.col.steps": "步数", "runs.col.created": "创建时间",
    "runs.col.lineage": "谱系",
    "runs.open_label": "打开运行 {id}", "runs.from": "来自 {id}", "runs.children": "→ {n}",
    "runs.children_label": "{n} 个后续运行", "runs.job": "任务{status}",
    "runs.status.running": "运行中", "runs.status.succeeded": "已完成", "runs.status.failed": "失败",
    "runs.status.interrupted": "已中断", "runs.status.cancelled": "已取消",
    "runs.kind.train": "训练", "runs.kind.export": "导出", "runs.kind.eval": "评估",
    "runs.close": "关闭", "runs.id": "运行 ID", "runs.fjob": "微调任务", "runs.base": "基座模型",
    "runs.data": "数据", "runs.duration": "耗时", "runs.ended": "结束时间", "runs.model": "模型 ID",
    "runs.error": "错误",
    "runs.actions": "操作", "runs.resume": "继续训练", "runs.export": "导出", "runs.dtype": "导出精度",
    "runs.new_run": "用此配置新建运行",
    "runs.exporting": "正在导出：合并模型并与该运行的模型核对…",
    "runs.exported": "已导出到 {folder}（{dtype}）。一致性检查通过：在 {samples} 个样本 / {tokens} 个词元上最大 " +
      "|Δlogit| 为 {diff}（容差 {tol}）。",
    "runs.export_failed": "导出未通过一致性检查：请勿使用。",
    "runs.open_export": "打开导出运行", "runs.resumed": "任务 {job} 已继续：请在第 5 步查看。",
    "runs.continued": "任务 {old} 从检查点第 {step} 步起以 {job} 继续：请在第 5 步查看。",
    "runs.filled": "第 2–4 步已填入此运行的文件和设置：检查后开始训练。",
    "runs.skipped": "未带入（该输入框只接受 key=value）：{keys}",
    "runs.chart": "损失", "runs.train_loss": "训练损失", "runs.eval_loss": "验证损失",
    "runs.no_points": "没有记录损失。", "runs.metrics": "最终指标", "runs.lineage": "谱系",
    "runs.this_run": "本运行", "runs.evals": "评估", "runs.artifacts": "产物",
    "runs.missing": "已不在磁盘上", "runs.config": "配置（YAML）", "runs.parity": "一致性检查",
    "runs.parity_ok": "通过：与该运行的模型相比最大 |Δlogit| 为 {diff}", "runs.parity_bad": "未通过",
    "runs.nothing": "无",
  },
});

const R = {runs: [], kind: "", detail: null, exported: null, note: null, poll: null, jobStatus: {}, busy: false};
const RUN_ACTIVE = ["running"];

const num = (v) => v == null ? "–" : Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4);
const when = (s) => s ? new Date(s * 1000).toLocaleString() : "–";
const short = (id) => id.slice(0, 8);
function duration(s) {
  if (s == null) return "–";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}
function statusBadge(status) {
  return el("span", {class: `badge ${status}`, "data-status": status}, t(`runs.status.${status}`));
}

// ---------- the section's frame (built once) ----------
function runsFrame() {
  const kinds = el("select", {id: "runs-kind", onchange: (e) => { R.kind = e.target.value; loadRuns(); }},
    ...[["", "runs.kind_all"], ["train", "runs.kind_train"], ["export", "runs.kind_export"]]
      .map(([v, k]) => el("option", {value: v}, t(k))));
  kinds.value = R.kind;
  $("runs-body").replaceChildren(
    el("p", {class: "hint"}, t("runs.hint")),
    el("div", {class: "row"}, el("label", {for: "runs-kind", class: "inline"}, t("runs.kind")), kinds,
       el("button", {type: "button", id: "runs-refresh", onclick: () => loadRuns()}, t("runs.refresh")),
       el("span", {id: "runs-status", class: "status", "aria-live": "polite"})),
    el("div", {id: "runs-error", class: "error", role: "alert", hidden: ""}),
    el("div", {class: "runs-scroll", role: "region", tabindex: "0", "aria-label": t("runs.table")},
       el("table", {id: "runs-table", class: "runs"}, el("thead"), el("tbody"))),
    el("p", {id: "runs-empty", class: "hint", hidden: ""}, t("runs.none")),
    el("div", {id: "run-detail", class: "run-detail", hidden: ""}));
}

// ---------- the list ----------
async function loadRuns() {
  clearTimeout(R.poll);
  $("runs-status").textContent = R.runs.length ? "" : t("runs.loading");
  try {
    const query = R.kind ? `?limit=100&kind=${R.kind}` : "?limit=100";
    R.runs = (await api(`/tf/v1/runs${query}`)).data;
    showError("runs-error", "");
  } catch (err) {
    showError("runs-error", err.message);
  }
  $("runs-status").textContent = "";
  renderRuns();
  // Poll while a run trains, and while the job shown in step 5 trains but its run is not recorded yet.
  const shown = S.job && ACTIVE.includes(S.job.status) && !R.runs.some((r) => r.job && r.job.id === S.job.id);
  if (shown || R.runs.some((r) => RUN_ACTIVE.includes(r.status))) R.poll = setTimeout(loadRuns, shown ? 3000 : 5000);
}

function renderRuns() {
  const table = $("runs-table");
  const heads = ["run", "status", "what", "loss", "eval_loss", "steps", "created", "lineage"];
  table.tHead.replaceChildren(el("tr", {}, ...heads.map((h) => el("th", {scope: "col"}, t(`runs.col.${h}`)))));
  table.tBodies[0].replaceChildren(...R.runs.map(runRow));
  $("runs-empty").hidden = R.runs.length > 0;
  table.parentElement.hidden = R.runs.length === 0;
}

function runRow(r) {
  const open = R.detail && R.detail.id === r.id;
  const jobNote = r.job && r.job.status !== r.status && r.job.status !== "running"
    ? el("small", {class: "sub"}, t("runs.job", {status: t(`status.${r.job.status}`)})) : "";
  const lineage = [r.parent_id ? el("span", {class: "mono"}, t("runs.from", {id: short(r.parent_id)})) : "",
    r.children.length ? el("span", {title: t("runs.children_label", {n: r.children.length}),
                                    "aria-label": t("runs.children_label", {n: r.children.length})},
                           t("runs.children", {n: r.children.length})) : ""];
  return el("tr", {"data-run": r.id, ...(open ? {"aria-current": "true"} : {})},
    el("td", {}, el("button", {type: "button", class: "link run-open", "aria-label": t("runs.open_label", {id: r.name}),
                               "aria-pressed": String(open), onclick: () => openRun(r.id)}, r.name),
       el("small", {class: "sub mono"}, short(r.id))),
    el("td", {}, statusBadge(r.status), jobNote),
    el("td", {}, r.kind === "train" ? `${(r.stage || "").toUpperCase()} · ${r.method || "?"}`
                                    : `${t(`runs.kind.${r.kind}`)}${r.method ? " · " + r.method : ""}`),
    el("td", {class: "n", "data-metric": "loss"}, num(r.metrics.loss)),
    el("td", {class: "n", "data-metric": "eval_loss"}, num(r.metrics.eval_loss)),
    el("td", {class: "n"}, r.steps == null ? "–" : String(r.steps)),
    el("td", {}, when(r.created_at)),
    el("td", {class: "lineage-cell"}, ...lineage));
}

// ---------- one run ----------
async function openRun(runId, {scroll = true} = {}) {
  showError("runs-error", "");
  try {
    const detail = await api(`/tf/v1/runs/${encodeURIComponent(runId)}`);
    if (!R.detail || R.detail.id !== detail.id) R.exported = R.note = null;
    R.detail = detail;
  } catch (err) {
    showError("runs-error", err.message);
    return;
  }
  renderRuns();
  renderDetail();
  if (scroll) {
    $("run-detail").scrollIntoView({block: "start"});
    $("run-title").focus({preventScroll: true});  // keyboard and screen reader users land on the opened run
  }
}

function closeRun() {
  const id = R.detail && R.detail.id;
  R.detail = R.exported = R.note = null;
  renderRuns();
  renderDetail();
  const row = document.querySelector(`#runs-table tr[data-run="${id}"] .run-open`);
  if (row) row.focus();
}

function fact(key, value) {
  return el("div", {}, el("dt", {}, t(key)), el("dd", {}, value));
}

function renderDetail() {
  const box = $("run-detail");
  const d = R.detail;
  box.hidden = !d;
  if (!d) return box.replaceChildren();
  const facts = [fact("runs.id", el("span", {class: "mono"}, d.id)),
    fact("runs.base", d.base_model || "–"), fact("runs.col.created", when(d.created_at)),
    fact("runs.duration", duration(d.duration_s)), fact("runs.col.steps", d.steps == null ? "–" : String(d.steps))];
  if (d.job) facts.push(fact("runs.fjob", el("span", {class: "mono"}, `${d.job.id} (${t(`status.${d.job.status}`)})`)));
  if (d.job && d.job.fine_tuned_model) facts.push(fact("runs.model", el("span", {class: "mono"},
                                                                             d.job.fine_tuned_model)));
  if (d.datasets.length) facts.push(fact("runs.data", d.datasets.map((x) => `${x.name} (${x.n_records ?? "?"}, `
                                                                           + `${x.role})`).join(", ")));
  box.replaceChildren(
    el("div", {class: "run-head"},
       el("h3", {id: "run-title", tabindex: "-1"}, `${d.name} · ${t(`runs.kind.${d.kind}`)}`), statusBadge(d.status),
       el("button", {type: "button", class: "ghost", id: "run-close", onclick: closeRun}, t("runs.close"))),
    el("dl", {class: "facts"}, ...facts),
    d.error ? el("p", {class: "run-error-text"}, el("strong", {}, t("runs.error") + ": "), d.error) : "",
    actionsBox(d),
    el("h4", {}, t("runs.chart")), lossChart(d.series),
    el("h4", {}, t("runs.metrics")), metricsTable(d.metrics),
    el("h4", {}, t("runs.lineage")), el("ul", {class: "lineage", id: "run-lineage"}, lineageNode(d.lineage)),
    ...(d.parity ? [el("h4", {}, t("runs.parity")), el("p", {id: "run-parity"}, d.parity.passed
      ? t("runs.parity_ok", {diff: d.parity.max_abs_diff.toExponential(2)}) : t("runs.parity_bad"))] : []),
    ...(d.evals.length ? [el("h4", {}, t("runs.evals")), el("ul", {class: "plain"}, d.evals.map((e) => el("li", {},
      el("strong", {}, e.name + ": "), Object.entries(e.metrics).slice(0, 6)
        .map(([k, v]) => `${k} ${typeof v === "number" ? num(v) : v}`).join(", "))))] : []),
    el("h4", {}, t("runs.artifacts")), el("ul", {class: "plain", id: "run-artifacts"}, d.artifacts.length
      ? d.artifacts.map((a) => el("li", {class: a.exists ? "" : "gone"}, el("strong", {}, a.kind + " "),
          el("span", {class: "mono"}, a.name), a.exists ? "" : ` (${t("runs.missing")})`))
      : [el("li", {}, t("runs.nothing"))]),
    d.config_yaml ? el("details", {id: "run-config"}, el("summary", {}, t("runs.config")),
                       el("pre", {class: "yaml"}, d.config_yaml)) : "");
}

function actionsBox(d) {
  const a = d.actions;
  const why = (key, action) => action.ok ? "" : el("li", {}, el("strong", {}, t(key) + ": "), action.why);
  const dtype = el("select", {id: "run-export-dtype", "aria-label": t("runs.dtype"),
                              ...(a.export.ok && !R.busy ? {} : {disabled: ""})},
    ...["auto", "float32", "bfloat16", "float16"].map((v) => el("option", {value: v}, v)));
  const button = (id, key, action, onclick, cls = "") => el("button", {type: "button", id, class: cls, onclick,
    title: action.why, ...(action.ok && !R.busy ? {} : {disabled: ""})}, t(key));
  const reasons = [why("runs.resume", a.resume), why("runs.export", a.export), why("runs.new_run", a.new_run)]
    .filter(Boolean);
  return el("div", {class: "run-actions"},
    el("div", {class: "row"},
       button("run-resume", "runs.resume", a.resume, () => resumeRun(d)),
       el("span", {class: "joined"}, button("run-export", "runs.export", a.export, () => exportRun(d)), dtype),
       button("run-new", "runs.new_run", a.new_run, () => newRunFrom(d), "primary")),
    reasons.length ? el("ul", {class: "why", id: "run-why"}, reasons) : "",
    el("div", {id: "run-error", class: "error", role: "alert", hidden: ""}),
    el("div", {id: "run-note", class: "status", "aria-live": "polite"}, noteText()),
    R.exported ? exportResult(R.exported) : "");
}

function exportResult(x) {
  const p = x.parity;
  return el("div", {id: "run-export-result", class: `export-result ${x.passed ? "ok" : "bad"}`},
    x.passed ? t("runs.exported", {folder: x.folder, dtype: x.dtype, diff: p.max_abs_diff.toExponential(2),
                                   samples: p.samples, tokens: p.tokens, tol: p.tolerance})
      : t("runs.export_failed"),
    x.run_id ? el("button", {type: "button", class: "ghost", onclick: () => openRun(x.run_id)},
                  t("runs.open_export")) : "");
}

async function runAction(d, work) {
  R.busy = true;
  renderDetail();
  showError("run-error", "");
  let failed = null;
  try {
    await work();
  } catch (err) {
    failed = err.message;
  }
  R.busy = false;
  if (R.detail && R.detail.id === d.id) await openRun(d.id, {scroll: false}).catch(() => {});
  if (failed) showError("run-error", failed);
  await loadRuns();
}

function resumeRun(d) {
  return runAction(d, async () => {
    const answer = await post(`/tf/v1/runs/${d.id}/resume`);
    R.note = answer.action === "resumed" ? [["runs.resumed", {job: answer.job.id}]]
      : [["runs.continued", {old: answer.continues, job: answer.job.id, step: answer.step}]];
    await openJob(answer.job.id);
  });
}

function exportRun(d) {
  const dtype = $("run-export-dtype").value;
  R.note = [["runs.exporting"]];
  return runAction(d, async () => {
    try {
      R.exported = await post(`/tf/v1/runs/${d.id}/export`, {dtype});
      R.note = null;
    } catch (err) {
      R.note = null;
      throw err;
    }
  });
}

function noteText() {  // kept as text keys, so a language switch translates it
  return (R.note || []).map(([key, vars]) => t(key, vars)).join(" ");
}

function overrideLine([key, value]) {
  if (value === null || typeof value === "object") return null;
  return `${key}=${value}`;
}

async function newRunFrom(d) {
  const n = d.actions.new_run;
  showError("run-error", "");
  if (!n.ok || !n.training_file) return showError("run-error", n.why);
  if (S.job) newJob();  // leave the open job's view: the data and settings steps come back
  await chooseFile(n.training_file.id);
  if (S.fileId !== n.training_file.id || !S.options) return showError("run-error", $("data-error").textContent);
  S.stage = n.stage;
  S.method = n.method;
  renderOptions();
  const hp = n.hyperparameters;
  $("set-epochs").value = String(hp.n_epochs);
  $("set-lr").value = String(hp.learning_rate_multiplier);
  $("set-batch").value = String(hp.batch_size);
  const entries = Object.entries(n.overrides);
  const lines = entries.map(overrideLine);
  $("set-overrides").value = lines.filter(Boolean).join("\n");
  $("set-overrides").rows = Math.min(12, Math.max(3, lines.length));
  if (n.suffix) $("set-suffix").value = n.suffix;
  const skipped = entries.filter((_, i) => !lines[i]).map(([k]) => k);
  $("advanced").open = true;
  R.note = [["runs.filled"], ...(skipped.length ? [["runs.skipped", {keys: skipped.join(", ")}]] : [])];
  $("run-note").textContent = noteText();
  schedulePlan();
  $("step-settings").scrollIntoView({block: "start"});
}

// ---------- chart, metrics, lineage ----------
function lossChart(series) {
  const node = svgNode;
  const W = 600, H = 220, L = 48, R_ = 12, T = 12, B = 28;
  const lines = [["loss", "line", "runs.train_loss", "key"], ["eval_loss", "line eval", "runs.eval_loss", "key eval"]]
    .filter(([k]) => series[k] && series[k].length);
  const svg = node("svg", {id: "run-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                           "aria-label": t("runs.chart")});
  svg.append(node("line", {class: "axis", x1: L, y1: H - B, x2: W - R_, y2: H - B}),
             node("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}));
  const all = lines.flatMap(([k]) => series[k]);
  svg.dataset.points = String((series.loss || []).length);
  if (!all.length) {
    svg.append(node("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, t("runs.no_points")));
    return svg;
  }
  const maxStep = Math.max(1, ...all.map((p) => p[0]));
  let lo = Math.min(...all.map((p) => p[1])), hi = Math.max(...all.map((p) => p[1]));
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const log = lo > 0 && hi / lo > 20;
  const f = log ? Math.log : (v) => v;
  const x = (s) => L + (W - L - R_) * (s / maxStep);
  const y = (v) => T + (H - T - B) * (1 - (f(v) - f(lo)) / (f(hi) - f(lo)));
  lines.forEach(([k, cls, label, keyCls], i) => {
    const pts = series[k];
    svg.append(node("path", {class: cls, d: pts.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},`
                                                                + `${y(p[1]).toFixed(1)}`).join(" ")}));
    if (pts.length === 1) svg.append(node("circle", {class: cls, cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3}));
    svg.append(node("text", {x: W - R_, y: T + 12 + 14 * i, "text-anchor": "end", class: keyCls},
                    `— ${t(label)}`));
  });
  svg.append(node("text", {x: L - 6, y: T + 10, "text-anchor": "end"}, hi.toFixed(2)),
             node("text", {x: L - 6, y: H - B, "text-anchor": "end"}, lo.toFixed(2)),
             node("text", {x: L, y: H - 8}, "0"),
             node("text", {x: W - R_, y: H - 8, "text-anchor": "end"}, `step ${maxStep}`
                                                                        + (log ? " · log scale" : "")));
  return svg;
}

function metricsTable(metrics) {
  const rows = Object.entries(metrics);
  if (!rows.length) return el("p", {class: "hint", id: "run-metrics"}, t("runs.nothing"));
  return el("dl", {class: "facts", id: "run-metrics"}, ...rows.map(([k, v]) => el("div", {"data-metric": k},
    el("dt", {}, k), el("dd", {}, num(v)))));
}

function lineageNode(n) {
  if (!n) return [];
  const label = `${t(`runs.kind.${n.kind}`)}${n.stage ? " " + n.stage : ""}${n.method ? " · " + n.method : ""}`;
  const head = n.focus
    ? el("span", {class: "focus"}, `${label} · ${short(n.id)} (${t("runs.this_run")})`)
    : el("button", {type: "button", class: "link", onclick: () => openRun(n.id)}, `${label} · ${short(n.id)}`);
  return el("li", {"data-run": n.id}, head, " ", statusBadge(n.status),
            n.children.length ? el("ul", {}, ...n.children.map(lineageNode)) : "");
}

// ---------- wiring ----------
function renderRunsAll() {
  const title = document.querySelector('[data-i18n="runs.title"]');
  if (title) title.textContent = t("runs.title");
  runsFrame();
  renderRuns();
  renderDetail();
}

document.addEventListener("tf:render", renderRunsAll);
document.addEventListener("tf:job", (e) => {
  const job = e.detail;
  if (!job || !job.id) return;
  const before = R.jobStatus[job.id];
  R.jobStatus[job.id] = job.status;
  if (before === job.status) return;  // the list changes when a job starts, pauses or ends
  if (before !== undefined || !["queued", "validating_files"].includes(job.status)) {
    loadRuns().then(() => {
      const open = R.detail && R.detail.job && R.detail.job.id === job.id;
      if (open && !R.busy) openRun(R.detail.id, {scroll: false});
    });
  }
});

renderRunsAll();
loadRuns();
