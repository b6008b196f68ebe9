// 7. Evaluate: the shown job's fine-tuned model against the base on the same rows, through /tf/v1/evals (the
// library of `tuneforge eval task` / `bench` / `compare`). Loaded after app.js: uses its $, el, api, post, S.
// Shown when the job has succeeded; runs in the background on the server, so a reload finds it again.
"use strict";

addText({
  en: {
    "eval.title": "Evaluate",
    "eval.hint": "Score the base and your fine-tuned model on the same rows and see what changed.",
    "eval.kind": "What to score", "eval.kind_task": "Your data (task metrics)",
    "eval.kind_bench": "A benchmark (general knowledge: did the model forget?)",
    "eval.no_bench": "No benchmark data on this server (set TUNEFORGE_BENCHMARKS).",
    "eval.file": "Data file", "eval.scoring": "Scoring", "eval.benchmark": "Benchmark", "eval.limit": "Rows (at most)",
    "eval.text": "as text: BLEU, ROUGE, exact match", "eval.labels": "as labels {labels}: accuracy, F1",
    "eval.split_training": "training data", "eval.split_validation": "validation data", "eval.rows": "{n} rows",
    "eval.run": "Run evaluation", "eval.history": "Earlier evaluations of this model", "eval.none": "(none yet)",
    "eval.st.queued": "queued", "eval.st.running": "running", "eval.st.succeeded": "done", "eval.st.failed": "failed",
    "eval.phase.queued": "waiting for another evaluation to finish",
    "eval.phase.base": "base model: {done} of {n} rows", "eval.phase.tuned": "fine-tuned model: {done} of {n} rows",
    "eval.phase.done": "{n} rows, {seconds} s", "eval.on": "{task} · {n} rows · {when}",
    "eval.chart": "Each metric, base and fine-tuned", "eval.base": "base", "eval.tuned": "fine-tuned",
    "eval.metric": "Metric", "eval.change": "Change", "eval.better": "better", "eval.worse": "worse",
    "eval.same": "same",
    "eval.outcome": "Per row: {wins} better, {losses} worse, {ties} unchanged (sign test p = {p}).",
    "eval.noise": "The change could be chance (p ≥ 0.05): use more rows to be sure.",
    "eval.worse_title": "Rows that got worse ({n})", "eval.better_title": "Rows that got better ({n})",
    "eval.no_worse": "No row got worse.", "eval.empty": "(empty answer)", "eval.prompt": "Prompt",
    "eval.reference": "Reference",
    "eval.base_answer": "Base answer", "eval.tuned_answer": "Fine-tuned answer",
    "eval.unit_percent": "0–100", "eval.unit_fraction": "%", "eval.unit_count": "count, lower is better",
  },
  zh: {
    "eval.title": "评估",
    "eval.hint": "在相同的数据上给基座模型和微调后的模型打分，看看哪里变了。",
    "eval.kind": "评估什么", "eval.kind_task": "你的数据（任务指标）",
    "eval.kind_bench": "基准测试（通用知识：模型是否遗忘？）",
    "eval.no_bench": "此服务器上没有基准测试数据（请设置 TUNEFORGE_BENCHMARKS）。",
    "eval.file": "数据文件", "eval.scoring": "评分方式", "eval.benchmark": "基准测试", "eval.limit": "最多行数",
    "eval.text": "按文本：BLEU、ROUGE、完全匹配", "eval.labels": "按标签 {labels}：准确率、F1",
    "eval.split_training": "训练数据", "eval.split_validation": "验证数据", "eval.rows": "{n} 行",
    "eval.run": "开始评估", "eval.history": "此模型之前的评估", "eval.none": "（还没有）",
    "eval.st.queued": "排队中", "eval.st.running": "运行中", "eval.st.succeeded": "完成", "eval.st.failed": "失败",
    "eval.phase.queued": "等待另一个评估结束",
    "eval.phase.base": "基座模型：{done} / {n} 行", "eval.phase.tuned": "微调模型：{done} / {n} 行",
    "eval.phase.done": "{n} 行，{seconds} 秒", "eval.on": "{task} · {n} 行 · {when}",
    "eval.chart": "各项指标：基座与微调后", "eval.base": "基座", "eval.tuned": "微调后",
    "eval.metric": "指标", "eval.change": "变化", "eval.better": "更好", "eval.worse": "更差", "eval.same": "不变",
    "eval.outcome": "逐行比较：{wins} 行变好，{losses} 行变差，{ties} 行不变（符号检验 p = {p}）。",
    "eval.noise": "这个变化可能只是偶然（p ≥ 0.05）：多用一些数据再确认。",
    "eval.worse_title": "变差的行（{n}）", "eval.better_title": "变好的行（{n}）", "eval.no_worse": "没有变差的行。",
    "eval.empty": "（空回答）",
    "eval.prompt": "提示", "eval.reference": "参考答案", "eval.base_answer": "基座的回答",
    "eval.tuned_answer": "微调模型的回答",
    "eval.unit_percent": "0–100", "eval.unit_fraction": "%", "eval.unit_count": "个数，越少越好",
  },
});

// app.js translated the page before this script added its text: translate this section's static text now
document.querySelectorAll('#step-eval [data-i18n^="eval."]').forEach((node) => {
  node.textContent = t(node.dataset.i18n);
});

const EV = {  // this section's state: what the server last said, and the form's choices
  model: null, options: null, evals: [], shown: null, poll: null,
  form: {kind: "task", fileId: null, scoring: null, benchmark: null, limit: null},
};

// ---------- following the shown job ----------
document.addEventListener("tf:job", (event) => {
  const job = event.detail;
  const model = job && job.status === "succeeded" ? job.fine_tuned_model : null;
  $("step-eval").hidden = !model;
  if (model === EV.model) return;
  clearTimeout(EV.poll);
  Object.assign(EV, {model, options: null, evals: [], shown: null});
  EV.form = {kind: "task", fileId: null, scoring: null, benchmark: null, limit: null};
  renderEval();
  if (model) loadEval(model);
});
document.addEventListener("tf:render", () => renderEval());
let evalResize = null;
window.addEventListener("resize", () => {  // the chart is drawn for the box's width: draw it again
  clearTimeout(evalResize);
  evalResize = setTimeout(() => { if (EV.shown && EV.shown.result) renderResult(); }, 150);
});

async function loadEval(model) {
  try {
    const [options, list] = await Promise.all([
      api(`/tf/v1/evals/options?model=${encodeURIComponent(model)}`),
      api(`/tf/v1/evals?model=${encodeURIComponent(model)}`)]);
    if (EV.model !== model) return;
    EV.options = options;
    EV.evals = list.data;
    EV.form.fileId = options.file_id;
    EV.form.benchmark = options.benchmarks.length ? options.benchmarks[0].name : null;
    EV.form.limit = options.default_limit;
    EV.shown = EV.evals[0] || null;
    if (EV.shown) formFrom(EV.shown);
    if (EV.form.fileId && EV.form.fileId !== options.file_id) EV.options = await fileOptions(EV.form.fileId);
    showError("eval-error", "");
  } catch (err) {
    showError("eval-error", err.message);
  }
  renderEval();
  if (EV.shown && ["queued", "running"].includes(EV.shown.status)) pollEval(EV.shown.id);
}

function fileOptions(fileId) {
  return api(`/tf/v1/evals/options?model=${encodeURIComponent(EV.model)}&file_id=${encodeURIComponent(fileId)}`);
}

function formFrom(ev) {
  // The form shows what the shown evaluation was run with, so its settings and its result never disagree.
  Object.assign(EV.form, {kind: ev.kind, limit: ev.limit, scoring: ev.kind === "task"
    ? (ev.scoring === "classification" ? "labels" : "text") : null});
  if (ev.kind === "task") EV.form.fileId = ev.file_id;
  else EV.form.benchmark = ev.benchmark;
}

async function chooseEvalFile(fileId) {
  EV.form.fileId = fileId;
  EV.form.scoring = null;
  try {
    EV.options = await fileOptions(fileId);
    showError("eval-error", "");
  } catch (err) {
    showError("eval-error", err.message);
  }
  renderEval();
}

// ---------- running one ----------
async function runEval() {
  const f = EV.form;
  const body = {model: EV.model, kind: f.kind, limit: Number(f.limit) || undefined};
  if (f.kind === "task") {
    body.file_id = f.fileId;
    body.scoring = scoringChoice();
  } else {
    body.benchmark = f.benchmark;
  }
  $("eval-run").disabled = true;
  try {
    EV.shown = await post("/tf/v1/evals", body);
    EV.evals = [EV.shown, ...EV.evals.filter((e) => e.id !== EV.shown.id)];
    showError("eval-error", "");
    renderEval();
    pollEval(EV.shown.id);
  } catch (err) {
    showError("eval-error", err.message);
    $("eval-run").disabled = false;
  }
}

async function pollEval(evalId) {
  clearTimeout(EV.poll);
  try {
    const ev = await api(`/tf/v1/evals/${evalId}`);
    if (!EV.shown || EV.shown.id !== evalId) return;
    EV.shown = ev;
    EV.evals = EV.evals.map((e) => e.id === ev.id ? ev : e);
  } catch (err) {
    showError("eval-error", err.message);
    return;
  }
  if (["queued", "running"].includes(EV.shown.status)) {
    renderProgress();
    EV.poll = setTimeout(() => pollEval(evalId), 700);
  } else {
    renderEval();
  }
}

function scoringChoice() {
  const labels = EV.options && EV.options.suggested_labels;
  return EV.form.scoring || (labels ? "labels" : "text");
}

// ---------- drawing ----------
function field(labelKey, control) {
  return el("label", {class: "ev-field"}, el("span", {}, t(labelKey)), control);
}
function select(id, options, value, onchange) {
  const node = el("select", {id, onchange: (e) => onchange(e.target.value)},
    ...options.map(([v, text]) => el("option", {value: v}, text)));
  node.value = value == null ? "" : value;
  return node;
}

function renderEval() {
  const body = $("eval-body");
  if (!body) return;
  if (!EV.model) { body.replaceChildren(); return; }
  const o = EV.options;
  const f = EV.form;
  const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.id : null;
  const parts = [el("p", {class: "hint"}, t("eval.hint"))];
  if (o) {
    const kinds = el("fieldset", {class: "ev-kinds"}, el("legend", {}, t("eval.kind")),
      ...[["task", "eval.kind_task"], ["benchmark", "eval.kind_bench"]].map(([kind, key]) => {
        const off = kind === "benchmark" && !o.benchmarks.length;
        return el("label", {class: "choice"}, el("input", {type: "radio", name: "eval-kind", value: kind,
          id: `eval-kind-${kind}`,
          ...(f.kind === kind ? {checked: ""} : {}), ...(off ? {disabled: ""} : {}),
          onchange: () => { f.kind = kind; renderEval(); }}),
        el("span", {}, t(key), off ? el("small", {}, t("eval.no_bench")) : ""));
      }));
    parts.push(kinds);
    const controls = [];
    if (f.kind === "task") {
      const files = o.files.map((x) => [x.id, `${x.filename} · ${t("eval.rows", {n: x.rows})}`
        + (x.split !== "other" ? ` · ${t("eval.split_" + x.split)}` : "")]);
      controls.push(field("eval.file", select("eval-file", files, f.fileId, chooseEvalFile)));
      const scorings = [["text", t("eval.text")]];
      if (o.suggested_labels) scorings.unshift(["labels", t("eval.labels", {labels: o.suggested_labels.join(" / ")})]);
      controls.push(field("eval.scoring", select("eval-scoring", scorings, scoringChoice(),
                                                 (v) => { f.scoring = v; })));
    } else {
      controls.push(field("eval.benchmark", select("eval-bench", o.benchmarks.map((b) => [b.name, b.name]),
                                                   f.benchmark, (v) => { f.benchmark = v; })));
    }
    controls.push(field("eval.limit", el("input", {id: "eval-limit", type: "number", min: 1, max: o.max_limit,
      value: f.limit, inputmode: "numeric", oninput: (e) => { f.limit = e.target.value; }})));
    parts.push(el("div", {class: "ev-controls"}, ...controls));
    const file = o.files.find((x) => x.id === f.fileId);
    if (f.kind === "task" && file && file.split === "training") {
      parts.push(el("p", {id: "eval-note", class: "ev-note", role: "note"}, o.memorization_note));
    }
    const run = el("button", {id: "eval-run", type: "button", class: "primary", onclick: runEval},
                   t("eval.run"));
    run.disabled = !canRun();
    const row = el("div", {class: "row"}, run);
    if (EV.evals.length > 1) {
      const past = EV.evals.map((e) => [e.id, `${t("eval.st." + e.status)} · ${t("eval.on", {task: e.task, n: e.n,
        when: new Date(e.created_at * 1000).toLocaleString()})}`]);
      row.append(field("eval.history", select("eval-history", past, EV.shown && EV.shown.id, (id) => {
        EV.shown = EV.evals.find((e) => e.id === id) || null;
        if (EV.shown) formFrom(EV.shown);
        if (EV.form.kind === "task" && EV.form.fileId !== EV.options.file_id) {
          fileOptions(EV.form.fileId).then((o) => { EV.options = o; renderEval(); }).catch(() => {});
        }
        renderEval();
        if (EV.shown && ["queued", "running"].includes(EV.shown.status)) pollEval(id);
      })));
    }
    parts.push(row);
  }
  const error = el("div", {id: "eval-error", class: "error", role: "alert"});
  const old = $("eval-error");
  error.hidden = !old || old.hidden;
  error.textContent = old ? old.textContent : "";
  parts.push(error);
  parts.push(el("div", {id: "eval-state"}));
  parts.push(el("div", {id: "eval-result"}));
  body.replaceChildren(...parts);
  renderProgress();
  renderResult();
  if (focused && $(focused)) $(focused).focus();  // a re-render keeps the keyboard where it was
}

function renderProgress() {
  const box = $("eval-state");
  const ev = EV.shown;
  if (!box) return;
  if (!ev) { box.replaceChildren(); return; }
  const p = ev.progress || {done: 0, total: 0, phase: ev.status};
  const share = p.total ? p.done / p.total : 0;
  const seconds = ev.result ? ev.result.seconds.base + ev.result.seconds.tuned : null;
  const phase = ev.status === "succeeded" ? t("eval.phase.done", {n: ev.n, seconds: seconds == null ? "?"
    : seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)})
    : ev.status === "failed" ? (ev.error || "")
    : p.phase === "tuned" ? t("eval.phase.tuned", {done: p.done - ev.n, n: ev.n})
    : p.phase === "base" ? t("eval.phase.base", {done: p.done, n: ev.n}) : t("eval.phase.queued");
  const badge = el("span", {id: "eval-status", class: `badge ${ev.status}`, "data-status": ev.status,
                            "aria-live": "polite"}, t("eval.st." + ev.status));
  const what = el("span", {class: "hint"}, `${ev.filename || ev.benchmark} · ${ev.model}`);
  const bar = el("div", {class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                         "aria-valuenow": String(Math.round(100 * share)), "aria-label": t("eval.title")},
                 el("div", {style: `width: ${(100 * share).toFixed(1)}%`}));
  const parts = [el("div", {class: "row status-row"}, badge, what)];
  if (ev.status !== "succeeded") parts.push(bar);
  parts.push(el("p", {id: "eval-phase", class: ev.status === "failed" ? "error" : "hint"}, phase));
  if (ev.note && ev.status === "succeeded") parts.push(el("p", {class: "ev-note", role: "note"}, ev.note));
  box.replaceChildren(...parts);
  const run = $("eval-run");
  if (run) run.disabled = !canRun();
}

function canRun() {
  const f = EV.form;
  const busy = EV.shown && ["queued", "running"].includes(EV.shown.status);
  return Boolean(EV.options && !busy && (f.kind === "task" ? f.fileId : f.benchmark));
}

function shown(m, value) {
  if (value == null) return "–";
  if (m.unit === "fraction") return (100 * value).toFixed(1) + "%";
  if (m.unit === "count") return String(Math.round(value));
  return value.toFixed(1);
}
function change(m) {
  const d = m.delta;
  const better = m.higher_is_better ? d > 1e-9 : d < -1e-9;
  const worse = m.higher_is_better ? d < -1e-9 : d > 1e-9;
  const amount = m.unit === "fraction" ? `${d >= 0 ? "+" : "−"}${Math.abs(100 * d).toFixed(1)} pt`
    : `${d >= 0 ? "+" : "−"}${m.unit === "count" ? Math.abs(d) : Math.abs(d).toFixed(1)}`;
  return {cls: better ? "up" : worse ? "down" : "same",
          text: better ? `▲ ${amount}` : worse ? `▼ ${amount}` : `= ${amount}`,
          word: t(better ? "eval.better" : worse ? "eval.worse" : "eval.same")};
}

function drawEvalChart(metrics) {
  const node = svgNode;
  // Drawn at the box's own width (1 SVG unit = 1 px), so the numbers stay readable on a phone.
  const room = ($("eval-result") && $("eval-result").clientWidth) || 760;
  const W = Math.max(300, Math.min(960, room));
  // per metric: its name and change on one line, then a bar for the base and one for the fine-tuned model
  const L = 78, R = 52, bar = 15, gap = 3, head = 18, group = head + 2 * bar + gap + 12, T = 4;
  const H = T + metrics.length * group;
  const svg = node("svg", {id: "eval-chart", class: "chart ev-chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                           style: `max-width: ${W}px`,
                           "aria-label": t("eval.chart"), "data-metrics": String(metrics.length)});
  metrics.forEach((m, i) => {
    const top = T + i * group;
    const max = m.unit === "percent" ? 100 : m.unit === "fraction" ? 1 : Math.max(m.base, m.tuned, 1);
    const width = (v) => Math.max(1, (W - L - R) * Math.min(1, Math.max(0, v) / max));
    const c = change(m);
    svg.append(node("text", {x: 6, y: top + 13, class: "ev-name"}, m.name),
               node("text", {x: W - 6, y: top + 13, "text-anchor": "end", class: `ev-delta ${c.cls}`}, c.text));
    [["base", m.base, "ev-base"], ["tuned", m.tuned, "ev-tuned"]].forEach(([who, v, cls], j) => {
      const y = top + head + j * (bar + gap);
      const g = node("g", {"data-metric": m.name, "data-model": who, "data-value": String(v)});
      g.append(node("text", {x: L - 6, y: y + bar - 4, "text-anchor": "end", class: "ev-who"}, t("eval." + who)),
               node("rect", {x: L, y, width: width(v), height: bar, rx: 2, class: cls}),
               node("text", {x: L + width(v) + 5, y: y + bar - 4, class: "ev-val"}, shown(m, v)));
      svg.append(g);
    });
  });
  return svg;
}

function cell(text) {
  // Long answers scroll inside their cell; an empty (or whitespace-only) answer says so instead of a blank box.
  const shownText = String(text || "").trim().replace(/\n{3,}/g, "\n\n");
  return shownText ? el("div", {class: "ev-cell"}, shownText) : el("em", {class: "ev-empty"}, t("eval.empty"));
}

function exampleTable(id, rows, caption) {
  const head = ["eval.prompt", "eval.reference", "eval.base_answer", "eval.tuned_answer"];
  return el("div", {class: "ev-table-wrap", tabindex: "0", role: "region", "aria-label": caption},
    el("table", {id, class: "ev-table ev-examples"},
      el("thead", {}, el("tr", {}, ...head.map((k) => el("th", {scope: "col"}, t(k))))),
      el("tbody", {}, ...rows.map((r) => el("tr", {"data-id": r.id},  // data-label: the heading on a phone
        el("td", {"data-label": t(head[0])}, el("div", {class: "ev-src mono"}, r.id), cell(r.prompt)),
        el("td", {"data-label": t(head[1])}, cell(r.reference)), el("td", {"data-label": t(head[2])}, cell(r.base)),
        el("td", {"data-label": t(head[3]), class: "ev-tuned-cell"}, cell(r.tuned)))))));
}

function renderResult() {
  const box = $("eval-result");
  const ev = EV.shown;
  if (!box) return;
  if (!ev || ev.status !== "succeeded" || !ev.result) { box.replaceChildren(); return; }
  const r = ev.result;
  const metrics = r.metrics;
  const table = el("div", {class: "ev-table-wrap"}, el("table", {id: "eval-metrics", class: "ev-table ev-nums"},
    el("thead", {}, el("tr", {}, ...["eval.metric", "eval.base", "eval.tuned", "eval.change"]
      .map((k) => el("th", {scope: "col"}, t(k))))),
    el("tbody", {}, ...metrics.map((m) => {
      const c = change(m);
      return el("tr", {"data-metric": m.name},
        el("th", {scope: "row"}, m.name, el("small", {}, ` (${t("eval.unit_" + m.unit)})`)),
        el("td", {}, shown(m, m.base)), el("td", {}, shown(m, m.tuned)),
        el("td", {class: `ev-delta ${c.cls}`}, `${c.text} ${c.word}`));
    }))));
  const p = r.sign_test_p;
  const parts = [el("h3", {}, t("eval.chart")), drawEvalChart(metrics), table,
    el("p", {id: "eval-outcome"}, t("eval.outcome", {wins: r.wins, losses: r.losses, ties: r.ties,
                                                      p: p < 0.001 ? p.toExponential(1) : p.toFixed(3)}))];
  if (p >= 0.05) parts.push(el("p", {class: "hint"}, t("eval.noise")));
  parts.push(el("h3", {id: "eval-worse-title"}, t("eval.worse_title", {n: r.losses})));
  parts.push(r.worse.length ? exampleTable("eval-worse", r.worse, t("eval.worse_title", {n: r.losses}))
    : el("p", {id: "eval-worse", class: "hint"}, t("eval.no_worse")));
  if (r.better.length) {
    parts.push(el("details", {id: "eval-better"}, el("summary", {}, t("eval.better_title", {n: r.wins})),
                  exampleTable("eval-better-table", r.better, t("eval.better_title", {n: r.wins}))));
  }
  box.replaceChildren(...parts);
}
