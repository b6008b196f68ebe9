// The UI's text in English and Chinese. Static text carries data-i18n="key" (data-i18n-placeholder for
// placeholders); app.js asks t(key, {name: value}) for the rest. A key missing in one language falls back to English.
"use strict";

const TEXT = {
  en: {
    "tagline": "Fine-tune a model, step by step",
    "model.title": "Model", "model.hint": "The base model this server fine-tunes and answers with.",
    "model.id": "Model", "model.size": "Size", "model.context": "Context length", "model.template": "Chat template",
    "model.device": "Device", "model.params": "{n} parameters", "model.tokens": "{n} tokens",
    "model.has_template": "yes ({name})", "model.no_template": "none: chat will not work",
    "model.has_own_template": "yes (its own)", "model.own_copy": "its own copy, loaded for chat",
    "model.other": "Fine-tune another model", "model.other_hint": "an alias, a local folder, a .gguf file or a hub id",
    "model.use": "Use it", "model.reset": "Back to the served model",
    "data.title": "Data",
    "data.hint": "A JSONL, JSON, CSV or Parquet file: chat (messages), alpaca, sharegpt or preference pairs.",
    "data.upload": "Upload a file", "data.or_pick": "or pick an uploaded one", "data.none": "(none yet)",
    "data.uploading": "Uploading and checking {name}…", "data.loading": "Rendering samples and running the doctor…",
    "data.refused": "The file was refused:",
    "data.format": "{name}: {rows} rows, format {format} (trains stage {stage})",
    "data.samples": "Three samples, as the model sees them", "data.trained": "trained tokens",
    "data.context": "context (not trained)", "data.doctor": "Dataset doctor", "data.clean": "No problems found.",
    "data.tokens": "{n} tokens", "data.truncated": "truncated",
    "data.or_registered": "or import a registered dataset", "data.import": "Import",
    "data.importing": "Importing {name}…", "data.hub_only": "on the hub: needs the network",
    "data.mapping": "Read as {format}: {pairs}",
    "data.no_format": "The format could not be detected. The file's columns: {columns}. Say below which holds what.",
    "data.map_fix": "Change the column mapping",
    "data.undetected": "{name} was not stored: its column names do not say which is the prompt and which the answer.",
    "data.map_note": "Say which column holds what. A new file is made from yours, read this way; your file stays as it is.",
    "data.map_format": "Format", "data.map_apply": "Read the file this way",
    "role.prompt": "instruction (prompt)", "role.query": "input (added to the prompt)", "role.response": "answer",
    "role.system": "system prompt", "role.history": "earlier turns", "role.messages": "conversation",
    "role.tools": "tools", "role.chosen": "preferred answer", "role.rejected": "rejected answer",
    "role.kto_tag": "good / bad label", "role.text": "text",
    "grader.title": "How answers are scored (the grader)",
    "grader.hint": "Reinforcement learning samples answers to each prompt and rewards the better ones. Say which column holds the reference answer and how an answer is compared with it.",
    "grader.reference": "Reference column", "grader.compare": "Compare", "grader.eq": "exactly equal",
    "grader.ilike": "contains it (any case)", "grader.fuzzy": "similar text (fuzzy match)",
    "grader.rouge": "word overlap (ROUGE-L)",
    "method.title": "Method and stage", "method.stage": "What to train", "method.method": "Method",
    "method.adapter": "small adapter beside the base", "method.model": "a whole new model",
    "settings.title": "Settings", "settings.hint": "\"auto\" picks a value from your data and this machine.",
    "settings.epochs": "Epochs", "settings.lr": "Learning rate multiplier", "settings.batch": "Batch size",
    "settings.advanced": "Advanced", "settings.suffix": "Model name suffix",
    "settings.overrides": "More config keys, one per line (key=value)",
    "settings.yaml": "The config this job will run", "settings.download": "Download YAML",
    "settings.yaml_note": "(works with tuneforge train; the job sets output.dir)",
    "settings.validation": "Validation file (optional: adds a validation loss curve)", "settings.no_validation": "(none)",
    "settings.start": "Start training", "settings.auto": "auto → {value}", "settings.lr_is": "learning rate {value}",
    "settings.memory": "Trains {trainable} parameters ({share} of the model); about {memory} of memory on {device}.",
    "settings.bad_line": "line {n}: write key=value",
    "train.title": "Train", "train.pause": "Pause", "train.resume": "Resume", "train.cancel": "Cancel",
    "train.new": "New job", "train.loss": "Loss", "train.log": "Log",
    "train.step": "step {step} of {total}", "train.eta": "about {time} left",
    "train.waiting": "waiting for the first step",
    "train.done": "Finished: {model}", "train.confirm_cancel": "Cancel this job? Its training stops for good.",
    "train.train_loss": "training loss", "train.valid_loss": "validation loss",
    "status.validating_files": "checking files", "status.queued": "queued", "status.running": "running",
    "status.pausing": "pausing", "status.paused": "paused", "status.succeeded": "succeeded",
    "status.failed": "failed", "status.cancelled": "cancelled",
    "chat.title": "Chat: your model and the base", "chat.prompt": "Message",
    "chat.placeholder": "Ask both models the same thing", "chat.send": "Send",
    "chat.tuned": "Fine-tuned", "chat.base": "Base", "chat.not_ready": "(available when training has succeeded)",
    "chat.good": "Good answer", "chat.bad": "Bad answer", "chat.thanks": "thanks, saved",
    "chat.correct": "Correct it", "chat.correction_label": "The answer it should have given",
    "chat.save_correction": "Save correction", "chat.correction_saved": "correction saved",
    "error.network": "The server did not answer: {why}",
    "jobs.open": "Open a job", "jobs.none": "Jobs…",
  },
  zh: {
    "tagline": "一步一步微调一个模型",
    "model.title": "模型", "model.hint": "本服务器用来微调和回答的基础模型。",
    "model.id": "模型", "model.size": "规模", "model.context": "上下文长度", "model.template": "对话模板",
    "model.device": "设备", "model.params": "{n} 个参数", "model.tokens": "{n} 个词元",
    "model.has_template": "有（{name}）", "model.no_template": "无：无法对话",
    "model.has_own_template": "有（自带）", "model.own_copy": "单独加载一份用于对话",
    "model.other": "微调其他模型", "model.other_hint": "别名、本地文件夹、.gguf 文件或模型中心 id",
    "model.use": "使用", "model.reset": "回到服务中的模型",
    "data.title": "数据",
    "data.hint": "JSONL、JSON、CSV 或 Parquet 文件：对话（messages）、alpaca、sharegpt 或偏好对。",
    "data.upload": "上传文件", "data.or_pick": "或选择已上传的文件", "data.none": "（暂无）",
    "data.uploading": "正在上传并检查 {name}…", "data.loading": "正在渲染样本并运行数据体检…",
    "data.refused": "文件被拒绝：",
    "data.format": "{name}：{rows} 行，格式 {format}（训练阶段 {stage}）",
    "data.samples": "三个样本（模型看到的样子）", "data.trained": "参与训练的词元",
    "data.context": "上下文（不训练）", "data.doctor": "数据体检", "data.clean": "没有发现问题。",
    "data.tokens": "{n} 个词元", "data.truncated": "已截断",
    "data.or_registered": "或导入已注册的数据集", "data.import": "导入",
    "data.importing": "正在导入 {name}…", "data.hub_only": "在模型中心：需要联网",
    "data.mapping": "按 {format} 读取：{pairs}",
    "data.no_format": "无法识别格式。文件的列：{columns}。请在下方指定每列的含义。",
    "data.map_fix": "修改列映射",
    "data.undetected": "{name} 未保存：无法从列名判断哪一列是提示、哪一列是回答。",
    "data.map_note": "指定每列的含义。系统会按此读取并生成一个新文件；你的原文件保持不变。",
    "data.map_format": "格式", "data.map_apply": "按此方式读取文件",
    "role.prompt": "指令（提示）", "role.query": "输入（附加到提示）", "role.response": "回答",
    "role.system": "系统提示", "role.history": "之前的对话轮次", "role.messages": "对话",
    "role.tools": "工具", "role.chosen": "更优回答", "role.rejected": "较差回答",
    "role.kto_tag": "好 / 坏标签", "role.text": "文本",
    "grader.title": "如何给回答打分（评分器）",
    "grader.hint": "强化学习会为每个提示采样多个回答，并奖励更好的回答。请指定哪一列是参考答案，以及如何将回答与它比较。",
    "grader.reference": "参考答案列", "grader.compare": "比较方式", "grader.eq": "完全相同",
    "grader.ilike": "包含参考答案（不分大小写）", "grader.fuzzy": "文本相似（模糊匹配）",
    "grader.rouge": "词语重合（ROUGE-L）",
    "method.title": "方法与阶段", "method.stage": "训练什么", "method.method": "方法",
    "method.adapter": "基础模型旁的小适配器", "method.model": "一个完整的新模型",
    "settings.title": "设置", "settings.hint": "“auto” 会根据你的数据和本机自动选择。",
    "settings.epochs": "训练轮数", "settings.lr": "学习率倍数", "settings.batch": "批大小",
    "settings.advanced": "高级", "settings.suffix": "模型名后缀",
    "settings.overrides": "更多配置项，每行一个（key=value）",
    "settings.yaml": "此任务将运行的配置", "settings.download": "下载 YAML",
    "settings.yaml_note": "（可用于 tuneforge train；任务会设置 output.dir）",
    "settings.validation": "验证文件（可选：增加一条验证损失曲线）", "settings.no_validation": "（无）",
    "settings.start": "开始训练", "settings.auto": "auto → {value}", "settings.lr_is": "学习率 {value}",
    "settings.memory":
      "训练 {trainable} 个参数（占模型 {share}）；在 {device} 上约需 {memory} 内存。",
    "settings.bad_line": "第 {n} 行：请写成 key=value",
    "train.title": "训练", "train.pause": "暂停", "train.resume": "继续", "train.cancel": "取消",
    "train.new": "新任务", "train.loss": "损失", "train.log": "日志",
    "train.step": "第 {step} / {total} 步", "train.eta": "约剩 {time}", "train.waiting": "等待第一步",
    "train.done": "完成：{model}", "train.confirm_cancel": "取消此任务？训练将永久停止。",
    "train.train_loss": "训练损失", "train.valid_loss": "验证损失",
    "status.validating_files": "检查文件", "status.queued": "排队中", "status.running": "训练中",
    "status.pausing": "暂停中", "status.paused": "已暂停", "status.succeeded": "已完成",
    "status.failed": "失败", "status.cancelled": "已取消",
    "chat.title": "对话：你的模型与基础模型", "chat.prompt": "消息",
    "chat.placeholder": "向两个模型问同一个问题", "chat.send": "发送",
    "chat.tuned": "微调后", "chat.base": "基础模型", "chat.not_ready": "（训练成功后可用）",
    "chat.good": "好回答", "chat.bad": "差回答", "chat.thanks": "已保存，谢谢",
    "chat.correct": "改正", "chat.correction_label": "它本应给出的回答",
    "chat.save_correction": "保存改正", "chat.correction_saved": "改正已保存",
    "error.network": "服务器没有回应：{why}",
    "jobs.open": "打开任务", "jobs.none": "任务…",
  },
};

let LANG = localStorage.getItem("tuneforge.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");

// Another script's text (runs.js, evaluate.js, ...): addText({en: {...}, zh: {...}}) before it renders.
function addText(more) {
  for (const [lang, entries] of Object.entries(more)) TEXT[lang] = Object.assign(TEXT[lang] || {}, entries);
  if (document.getElementById("lang")) applyLanguage();  // the page's data-i18n text that was waiting for these
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
