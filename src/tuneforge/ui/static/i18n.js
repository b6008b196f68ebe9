// The UI's text in English and Chinese. Static text carries data-i18n="key" (data-i18n-placeholder for
// placeholders); app.js asks t(key, {name: value}) for the rest. A key missing in one language falls back to English.
"use strict";

const TEXT = {
  en: {
    "tagline": "Fine-tune a model in six steps",
    "model.title": "Model", "model.hint": "The base model this server fine-tunes and answers with.",
    "model.id": "Model", "model.size": "Size", "model.context": "Context length", "model.template": "Chat template",
    "model.device": "Device", "model.params": "{n} parameters", "model.tokens": "{n} tokens",
    "model.has_template": "yes ({name})", "model.no_template": "none: chat will not work",
    "data.title": "Data",
    "data.hint": "A JSONL, JSON, CSV or Parquet file: chat (messages), alpaca, sharegpt or preference pairs.",
    "data.upload": "Upload a file", "data.or_pick": "or pick an uploaded one", "data.none": "(none yet)",
    "data.uploading": "Uploading and checking {name}…", "data.loading": "Rendering samples and running the doctor…",
    "data.refused": "The file was refused:",
    "data.format": "{name}: {rows} rows, format {format} (trains stage {stage})",
    "data.samples": "Three samples, as the model sees them", "data.trained": "trained tokens",
    "data.context": "context (not trained)", "data.doctor": "Dataset doctor", "data.clean": "No problems found.",
    "data.tokens": "{n} tokens", "data.truncated": "truncated",
    "method.title": "Method and stage", "method.stage": "What to train", "method.method": "Method",
    "method.adapter": "small adapter beside the base", "method.model": "a whole new model",
    "settings.title": "Settings", "settings.hint": "\"auto\" picks a value from your data and this machine.",
    "settings.epochs": "Epochs", "settings.lr": "Learning rate multiplier", "settings.batch": "Batch size",
    "settings.advanced": "Advanced", "settings.suffix": "Model name suffix",
    "settings.overrides": "More config keys, one per line (key=value)",
    "settings.yaml": "The config this job will run", "settings.download": "Download YAML",
    "settings.yaml_note": "(works with tuneforge train; the job sets output.dir)",
    "settings.start": "Start training", "settings.auto": "auto → {value}", "settings.lr_is": "learning rate {value}",
    "settings.memory": "Trains {trainable} parameters ({share} of the model); about {memory} of memory on {device}.",
    "settings.bad_line": "line {n}: write key=value",
    "train.title": "Train", "train.pause": "Pause", "train.resume": "Resume", "train.cancel": "Cancel",
    "train.new": "New job", "train.loss": "Training loss", "train.log": "Log",
    "train.step": "step {step} of {total}", "train.eta": "about {time} left",
    "train.waiting": "waiting for the first step",
    "train.done": "Finished: {model}", "train.confirm_cancel": "Cancel this job? Its training stops for good.",
    "status.validating_files": "checking files", "status.queued": "queued", "status.running": "running",
    "status.pausing": "pausing", "status.paused": "paused", "status.succeeded": "succeeded",
    "status.failed": "failed", "status.cancelled": "cancelled",
    "chat.title": "Chat: your model and the base", "chat.prompt": "Message",
    "chat.placeholder": "Ask both models the same thing", "chat.send": "Send",
    "chat.tuned": "Fine-tuned", "chat.base": "Base", "chat.not_ready": "(available when training has succeeded)",
    "chat.good": "Good answer", "chat.bad": "Bad answer", "chat.thanks": "thanks, saved",
    "error.network": "The server did not answer: {why}",
    "jobs.open": "Open a job", "jobs.none": "Jobs…",
  },
  zh: {
    "tagline": "六步微调一个模型",
    "model.title": "模型", "model.hint": "本服务器用来微调和回答的基础模型。",
    "model.id": "模型", "model.size": "规模", "model.context": "上下文长度", "model.template": "对话模板",
    "model.device": "设备", "model.params": "{n} 个参数", "model.tokens": "{n} 个词元",
    "model.has_template": "有（{name}）", "model.no_template": "无：无法对话",
    "data.title": "数据",
    "data.hint": "JSONL、JSON、CSV 或 Parquet 文件：对话（messages）、alpaca、sharegpt 或偏好对。",
    "data.upload": "上传文件", "data.or_pick": "或选择已上传的文件", "data.none": "（暂无）",
    "data.uploading": "正在上传并检查 {name}…", "data.loading": "正在渲染样本并运行数据体检…",
    "data.refused": "文件被拒绝：",
    "data.format": "{name}：{rows} 行，格式 {format}（训练阶段 {stage}）",
    "data.samples": "三个样本（模型看到的样子）", "data.trained": "参与训练的词元",
    "data.context": "上下文（不训练）", "data.doctor": "数据体检", "data.clean": "没有发现问题。",
    "data.tokens": "{n} 个词元", "data.truncated": "已截断",
    "method.title": "方法与阶段", "method.stage": "训练什么", "method.method": "方法",
    "method.adapter": "基础模型旁的小适配器", "method.model": "一个完整的新模型",
    "settings.title": "设置", "settings.hint": "“auto” 会根据你的数据和本机自动选择。",
    "settings.epochs": "训练轮数", "settings.lr": "学习率倍数", "settings.batch": "批大小",
    "settings.advanced": "高级", "settings.suffix": "模型名后缀",
    "settings.overrides": "更多配置项，每行一个（key=value）",
    "settings.yaml": "此任务将运行的配置", "settings.download": "下载 YAML",
    "settings.yaml_note": "（可用于 tuneforge train；任务会设置 output.dir）",
    "settings.start": "开始训练", "settings.auto": "auto → {value}", "settings.lr_is": "学习率 {value}",
    "settings.memory":
      "训练 {trainable} 个参数（占模型 {share}）；在 {device} 上约需 {memory} 内存。",
    "settings.bad_line": "第 {n} 行：请写成 key=value",
    "train.title": "训练", "train.pause": "暂停", "train.resume": "继续", "train.cancel": "取消",
    "train.new": "新任务", "train.loss": "训练损失", "train.log": "日志",
    "train.step": "第 {step} / {total} 步", "train.eta": "约剩 {time}", "train.waiting": "等待第一步",
    "train.done": "完成：{model}", "train.confirm_cancel": "取消此任务？训练将永久停止。",
    "status.validating_files": "检查文件", "status.queued": "排队中", "status.running": "训练中",
    "status.pausing": "暂停中", "status.paused": "已暂停", "status.succeeded": "已完成",
    "status.failed": "失败", "status.cancelled": "已取消",
    "chat.title": "对话：你的模型与基础模型", "chat.prompt": "消息",
    "chat.placeholder": "向两个模型问同一个问题", "chat.send": "发送",
    "chat.tuned": "微调后", "chat.base": "基础模型", "chat.not_ready": "（训练成功后可用）",
    "chat.good": "好回答", "chat.bad": "差回答", "chat.thanks": "已保存，谢谢",
    "error.network": "服务器没有回应：{why}",
    "jobs.open": "打开任务", "jobs.none": "任务…",
  },
};

let LANG = localStorage.getItem("tuneforge.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");

// Another script's text (runs.js, evaluate.js, ...): addText({en: {...}, zh: {...}}) before it renders.
function addText(more) {
  for (const [lang, entries] of Object.entries(more)) TEXT[lang] = Object.assign(TEXT[lang] || {}, entries);
}

function t(key, vars) {
  const text = (TEXT[LANG] && TEXT[LANG][key]) || TEXT.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars && name in vars ? String(vars[name]) : `{${name}}`));
}

function applyLanguage() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  document.getElementById("lang").textContent = LANG === "zh" ? "English" : "中文";
}

function switchLanguage() {
  LANG = LANG === "zh" ? "en" : "zh";
  localStorage.setItem("tuneforge.lang", LANG);
  applyLanguage();
}
