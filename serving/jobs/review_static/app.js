// adgen review: pages of /api/items into a grid; the keyboard moves a focus and records
// decisions through /api/decision (saved on disk before the answer comes back).
"use strict";
const PAGE = 60;
const $ = (id) => document.getElementById(id);
const grid = $("grid");
const state = { items: [], total: 0, focus: -1, loading: false, generation: 0, indexing: false };
const BADGE = { approve: "approved", reject: "rejected" };

function fileUrl(kind, path) {
  return `/${kind}/` + path.split("/").map(encodeURIComponent).join("/");
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function toast(message, error) {
  const t = $("toast");
  t.textContent = message;
  t.className = "show" + (error ? " err" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), error ? 6000 : 2500);
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showCounts(c, indexing) {
  const pending = c.images - c.approved - c.rejected;
  $("counts").innerHTML = "";
  $("counts").append(`${c.images.toLocaleString()} images${indexing ? " so far" : ""} · `,
    el("span", "ok", `${c.approved.toLocaleString()} approved`), " · ",
    el("span", "no", `${c.rejected.toLocaleString()} rejected`), ` · ${pending.toLocaleString()} pending`);
  $("export").disabled = c.approved === 0;
}

function paint(tile, item) {
  tile.classList.toggle("approve", item.decision === "approve");
  tile.classList.toggle("reject", item.decision === "reject");
  tile.dataset.decision = item.decision || "";
  tile.querySelector(".badge").textContent = BADGE[item.decision] || "";
}

function makeTile(item, i) {
  const tile = el("article", "tile");
  tile.dataset.id = item.custom_id;
  tile.dataset.i = i;
  tile.setAttribute("role", "option");
  tile.setAttribute("aria-selected", "false");
  const pic = el("div", "pic");
  if (item.missing) {
    pic.append(el("span", "gone", "file missing"));
  } else {
    const img = el("img");
    img.loading = "lazy";
    img.alt = item.prompt;
    img.src = fileUrl("thumb", item.path);
    pic.append(img);
  }
  const meta = el("div", "meta");
  meta.append(el("span", "cid", item.custom_id));
  if (item.seed !== null) meta.append(el("span", "seed", `seed ${item.seed}`));
  if (item.family) meta.append(el("span", "fam", item.family));
  tile.append(pic, el("span", "badge"), meta, el("div", "prompt", item.prompt));
  tile.querySelector(".prompt").title = item.prompt;
  if (item.brief) tile.append(el("div", "brief", item.brief));
  if (item.creatives.length) {
    const strip = el("div", "creatives");
    for (const c of item.creatives) {
      const a = el("a");
      a.href = fileUrl("file", c.path);
      a.target = "_blank";
      a.title = `${c.size || ""} ${c.headline || ""}`.trim();
      const img = el("img");
      img.loading = "lazy";
      img.alt = `creative ${c.size || ""}`;
      img.src = fileUrl("thumb", c.path);
      a.append(img);
      strip.append(a);
    }
    tile.append(strip);
  }
  paint(tile, item);
  tile.addEventListener("click", () => setFocus(i));
  return tile;
}

function query(offset) {
  const params = new URLSearchParams({ offset, limit: PAGE, q: $("q").value,
                                       decision: $("decision").value });
  return `/api/items?${params}`;
}

async function load(reset) {
  if (reset) {
    state.generation += 1;
    state.items = [];
    state.total = 0;
    state.focus = -1;
    state.loading = false;
    grid.innerHTML = "";
  }
  if (state.loading || (!reset && !state.indexing && state.items.length >= state.total)) return;
  const generation = state.generation;
  state.loading = true;
  $("more").textContent = "loading…";
  try {
    const page = await api(query(state.items.length));
    if (generation !== state.generation) return;  // a newer filter replaced this one
    state.total = page.total;
    state.indexing = page.indexing;
    // The server is still reading a large manifest: ask again for what it has read since.
    if (page.indexing) setTimeout(() => load(false), 400);
    if (page.items.length) grid.querySelector(".empty")?.remove();
    for (const item of page.items) {
      const i = state.items.length;
      state.items.push(item);
      grid.append(makeTile(item, i));
    }
    showCounts(page.counts, page.indexing);
    if (state.total === 0 && !page.indexing && !grid.querySelector(".empty")) {
      grid.append(el("div", "empty", "No image matches."));
    }
    if (state.focus < 0 && state.items.length) setFocus(0);
    $("shown").textContent = `showing ${state.items.length.toLocaleString()} of ` +
      `${state.total.toLocaleString()}${page.indexing ? " (reading the manifest…)" : ""}`;
  } catch (err) {
    toast(`could not load images: ${err.message}`, true);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      $("more").textContent = "";
    }
  }
}

function tileAt(i) {
  return grid.querySelector(`.tile[data-i="${i}"]`);
}

function setFocus(i) {
  if (i < 0 || i >= state.items.length) return;
  const old = tileAt(state.focus);
  if (old) { old.classList.remove("focus"); old.setAttribute("aria-selected", "false"); }
  state.focus = i;
  const tile = tileAt(i);
  tile.classList.add("focus");
  tile.setAttribute("aria-selected", "true");
  tile.scrollIntoView({ block: "nearest" });
  if (i >= state.items.length - 8) load(false);
}

async function move(step) {
  const next = state.focus + step;
  if (next >= state.items.length && state.items.length < state.total) await load(false);
  setFocus(Math.min(Math.max(next, 0), state.items.length - 1));
}

async function decide(decision) {
  const i = state.focus;
  const item = state.items[i];
  if (!item) return;
  try {
    const answer = await api("/api/decision", { custom_id: item.custom_id, decision });
    item.decision = decision === "clear" ? null : decision;
    paint(tileAt(i), item);
    showCounts(answer.counts);
    if (decision !== "clear" && state.focus === i) await move(1);
  } catch (err) {
    toast(`not saved: ${err.message}`, true);
  }
}

async function exportApproved() {
  $("export").disabled = true;
  try {
    const r = await api("/api/export", {});
    const left = r.left_out.length ? `, ${r.left_out.length} left out` : "";
    toast(`exported ${r.images} images and ${r.creatives} creatives to ${r.dest}${left}`);
  } catch (err) {
    toast(`export failed: ${err.message}`, true);
  } finally {
    $("export").disabled = false;
  }
}

document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target.matches("input, select, textarea")) {
    if (event.key === "Escape" || event.key === "Enter") target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {
    j: () => move(1), ArrowRight: () => move(1), k: () => move(-1), ArrowLeft: () => move(-1),
    a: () => decide("approve"), r: () => decide("reject"), u: () => decide("clear"),
    o: () => { const it = state.items[state.focus]; if (it) window.open(fileUrl("file", it.path)); },
    "/": () => $("q").focus(),
  };
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
});

let typing;
$("q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => load(true), 200); });
$("decision").addEventListener("change", () => { $("decision").blur(); load(true); });
$("export").addEventListener("click", exportApproved);
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) load(false);
}).observe($("more"));

api("/api/info").then((info) => {
  $("job").textContent = info.job;
  document.title = `${info.job} · adgen review`;
  $("export").title = `Copy the approved images and their creatives to ${info.export_dir}`;
  showCounts(info.counts, info.indexing);
}).catch((err) => toast(err.message, true));
load(true);
