// The review page: one image at a time, keys to decide, every decision saved by the server at once.
// File names and types are only ever set as text (textContent), never as HTML.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const api = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
let data = null;      // the server's listing: items in review order, classes, defect types
let shown = [];       // positions in data.items that pass the filter
let at = 0;           // index into shown
const undo = [];      // [{index, label, defect_type}] as they were before each decision

const $ = (id) => document.getElementById(id);

async function load() {
  const response = await fetch(api("api/items"));
  data = await response.json();
  $("heatfigure").hidden = !data.has_maps;
  $("threshold").textContent = "0.5 (raw " + Number(data.raw_threshold).toPrecision(4) + ")";
  const types = $("types");
  types.replaceChildren();
  data.defect_types.slice(0, 9).forEach((kind, i) => {
    const button = document.createElement("button");
    button.textContent = (i + 1) + ": " + kind;
    button.addEventListener("click", () => mark("defect", kind));
    types.appendChild(button);
  });
  applyFilter(firstUnlabelled());
}

function firstUnlabelled() {
  const position = data.items.findIndex((item) => !item.label);
  return position < 0 ? 0 : position;
}

function applyFilter(keepPosition) {
  const kind = $("filter").value;
  const passes = (item) => kind === "all" || (kind === "flagged" && item.verdict === "anomaly") ||
    (kind === "uncertain" && item.uncertain) || (kind === "unlabelled" && !item.label);
  shown = data.items.map((item, position) => position).filter((position) => passes(data.items[position]));
  const found = shown.indexOf(keepPosition);
  at = found >= 0 ? found : 0;
  render();
}

function current() { return shown.length ? data.items[shown[at]] : null; }

function render() {
  const item = current();
  $("progress").textContent = shown.length ? (at + 1) + " of " + shown.length + " shown, " +
    data.items.filter((i) => i.label).length + " of " + data.items.length + " labelled" : "nothing to show here";
  if (!item) { $("name").textContent = ""; $("image").removeAttribute("src"); $("heatmap").removeAttribute("src"); return; }
  $("name").textContent = item.name;
  $("score").textContent = item.score === null ? "-" : item.score.toFixed(3);
  $("verdict").textContent = item.verdict + (item.uncertain ? " (close call)" : "");
  $("verdict").className = item.verdict;
  $("label").textContent = item.label ? item.label + (item.defect_type ? " (" + item.defect_type + ")" : "") : "not yet";
  $("label").className = item.label ? (item.label === data.normal_class ? "tag-good" : "tag-defect") : "";
  $("image").src = api("api/image/" + item.index);
  if (data.has_maps && item.verdict !== "unreadable") $("heatmap").src = api("api/heatmap/" + item.index);
  renderStrip();
}

function renderStrip() {
  const strip = $("strip");
  strip.replaceChildren();
  const first = Math.max(0, at - 7), last = Math.min(shown.length, first + 15);
  for (let k = first; k < last; k++) {
    const item = data.items[shown[k]];
    const cell = document.createElement("div");
    if (k === at) cell.className = "current";
    const thumb = document.createElement("img");
    thumb.loading = "lazy";
    thumb.src = api("api/image/" + item.index + "?size=128");
    const caption = document.createElement("span");
    caption.textContent = (item.label ? (item.label === data.normal_class ? "good" : "defect") : "?") + " " + (item.score === null ? "-" : item.score.toFixed(2));
    caption.className = item.verdict;
    cell.append(thumb, caption);
    cell.addEventListener("click", () => { at = k; render(); });
    strip.appendChild(cell);
  }
}

async function save(item, decision, kind) {
  const response = await fetch(api("api/decide"), {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({index: item.index, decision: decision, defect_type: kind || ""})});
  const saved = await response.json();
  if (!response.ok) { $("saved").textContent = "not saved: " + (saved.error || response.status); return false; }
  item.label = saved.label;
  item.defect_type = saved.defect_type;
  $("saved").textContent = "saved to " + data.labels_file;
  return true;
}

async function mark(decision, kind) {
  const item = current();
  if (!item) return;
  undo.push({position: shown[at], label: item.label, defect_type: item.defect_type});
  if (!(await save(item, decision, kind))) return;
  if ($("filter").value === "unlabelled") applyFilter(shown[at + 1]);  // the decided image leaves this list
  else move(1);
}

async function undoLast() {
  const last = undo.pop();
  if (!last) return;
  const item = data.items[last.position];
  const decision = !last.label ? null : (last.label === data.normal_class ? "good" : "defect");
  await save(item, decision, last.defect_type);
  applyFilter(last.position);
}

function move(step) {
  if (!shown.length) return;
  at = Math.min(shown.length - 1, Math.max(0, at + step));
  render();
}

document.addEventListener("keydown", (event) => {
  if (event.target === $("typedtype") || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === "g") mark("good");
  else if (key === "d") mark("defect");
  else if (key === "u") undoLast();
  else if (key === "ArrowRight" || key === "ArrowDown") move(1);
  else if (key === "ArrowLeft" || key === "ArrowUp") move(-1);
  else if (key === "t") { event.preventDefault(); $("typedtype").focus(); }
  else if (/^[1-9]$/.test(key) && data && data.defect_types[Number(key) - 1]) mark("defect", data.defect_types[Number(key) - 1]);
  else return;
  event.preventDefault();
});
$("typed").addEventListener("submit", (event) => {
  event.preventDefault();
  const kind = $("typedtype").value.trim();
  $("typedtype").value = "";
  $("typedtype").blur();
  if (kind) {
    if (!data.defect_types.includes(kind)) data.defect_types.push(kind);
    mark("defect", kind);
  }
});
$("good").addEventListener("click", () => mark("good"));
$("defect").addEventListener("click", () => mark("defect"));
$("undo").addEventListener("click", undoLast);
$("filter").addEventListener("change", () => applyFilter(shown[at]));
load();
