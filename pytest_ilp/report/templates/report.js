// The sample table of the pytest-ilp HTML report. The records are embedded once as JSON; the
// table draws one page of the filtered records at a time, so a report of 100,000 samples costs
// one JSON.parse and a filter loop, never 100,000 DOM rows. Every text from the report goes in
// through textContent, never innerHTML. The filters live in the URL's #fragment, so a view can
// be bookmarked or linked ("report.html#cause=forgetting&open=q0152").
//
// This script runs before the browser has read the bulk of the records (they follow it in the
// file): it draws the first screen from the first page of records, embedded apart, and takes
// over with every record once the document is parsed ("ilp-ready", then "ilp-loaded").
"use strict";
(function () {
  const first = JSON.parse(document.getElementById("ilp-first").textContent);
  const PAGE = first.page;
  let records = first.samples;
  let loaded = false;
  const form = document.getElementById("filters");
  const rows = document.getElementById("sample-rows");
  const FILTERS = ["q", "outcome", "cause", "stage", "tag", "must", "baseline", "sort"];
  const NO_STAGE = "(no stage)", NO_TAG = "(no tag)";
  let matching = [], page = 0;
  const opened = new Set();

  // Lower-cased text a search looks through, built on the first search only.
  let haystack = null;
  function searchable(r) {
    return [r.id, r.source, r.cause, r.evidence, r.produced, r.prompt, r.target,
      r.messages ? r.messages.map((m) => m.content).join("\n") : "", r.error]
      .filter(Boolean).join("\n").toLowerCase();
  }

  function value(name) {
    const field = form.elements.namedItem(name);
    return field ? field.value : "";
  }

  function matches(r, f) {
    if (f.outcome) {
      if (f.outcome === "learned" && r.learned !== true) return false;
      if (f.outcome === "unlearned" && r.learned !== false) return false;
      if (f.outcome === "fragile" && !r.fragile) return false;
      if (f.outcome.startsWith("gate:") && r.gate !== f.outcome.slice(5)) return false;
    }
    if (f.cause && r.cause !== f.cause) return false;
    if (f.stage && (r.stage || NO_STAGE) !== f.stage) return false;
    if (f.tag && !(r.tags && r.tags.length ? r.tags : [NO_TAG]).includes(f.tag)) return false;
    if (f.must === "yes" && !r.must_learn) return false;
    if (f.must === "no" && r.must_learn) return false;
    if (f.baseline && r.baseline !== f.baseline) return false;
    return true;
  }

  function apply() {
    if (!loaded) return; // the filters wait for every record (see `load`)
    const f = {};
    for (const name of FILTERS) f[name] = value(name);
    const q = f.q.trim().toLowerCase();
    if (q && haystack === null) haystack = records.map(searchable);
    matching = [];
    for (let i = 0; i < records.length; i++) {
      if (matches(records[i], f) && (!q || haystack[i].includes(q))) matching.push(i);
    }
    const number = (x) => (typeof x === "number" ? x : -Infinity);
    if (f.sort === "nll") matching.sort((a, b) => number(records[b].nll) - number(records[a].nll));
    if (f.sort === "margin") matching.sort((a, b) => margin(records[a]) - margin(records[b]));
    document.getElementById("match-count").textContent = String(matching.length);
    for (const el of document.querySelectorAll("[data-filter]")) {
      el.classList.toggle("active", value(el.dataset.filter) === el.dataset.value);
    }
    draw();
    writeHash();
  }

  function margin(r) {
    return typeof r.margin === "number" ? r.margin : Infinity;
  }

  function draw() {
    const total = loaded ? matching.length : first.total;
    const pages = Math.max(1, Math.ceil(total / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    rows.replaceChildren();
    for (const i of matching.slice(page * PAGE, (page + 1) * PAGE)) {
      const r = records[i];
      const tr = el("tr", "row");
      tr.dataset.id = r.id;
      const first = el("td");
      first.append(el("code", "", r.id));
      if (r.must_learn) first.append(" ", el("span", "pill must", "must-learn"));
      tr.append(first, outcomeCell(r), el("td", "", r.cause || ""), el("td", "", r.stage || ""),
        el("td", "", (r.tags || []).join(", ")), el("td", "num", fixed(r.token_accuracy, 2)),
        el("td", "num", fixed(r.nll, 3)), el("td", "num", signed(r.margin)));
      tr.addEventListener("click", () => toggle(r.id));
      rows.append(tr);
      if (opened.has(r.id)) {
        tr.classList.add("open");
        rows.append(detail(r));
      }
    }
    document.getElementById("page-label").textContent =
      `page ${page + 1} of ${pages} (${total} samples)`;
    document.getElementById("page-prev").disabled = !loaded || page === 0;
    document.getElementById("page-next").disabled = !loaded || page >= pages - 1;
  }

  function outcomeCell(r) {
    const td = el("td");
    const kind = r.learned === true ? "learned" : r.learned === false ? "unlearned" : "invalid";
    td.append(el("span", "pill " + kind, kind));
    if (r.gate && r.gate !== "passed" && r.gate !== kind) td.append(" ", el("span", "pill " + r.gate, r.gate));
    if (r.fragile) td.append(" ", el("span", "pill fragile", "fragile"));
    if (r.baseline) td.append(" ", el("span", "muted", r.baseline));
    return td;
  }

  function toggle(id) {
    if (!loaded) return;
    if (opened.has(id)) opened.delete(id); else opened.add(id);
    draw();
    writeHash();
  }

  // The opened sample: what a person needs to act on it.
  function detail(r) {
    const tr = el("tr", "detail");
    tr.dataset.id = r.id;
    const td = el("td");
    td.colSpan = 8;
    const dl = el("dl");
    const add = (label, content) => {
      if (content === null || content === undefined || content === "") return;
      dl.append(el("dt", "", label));
      const dd = el("dd");
      dd.append(content);
      dl.append(dd);
    };
    add("source", r.source || "");
    if (r.error) add("cannot be checked", r.error);
    if (r.messages) {
      add("prompt", pre(r.messages.map((m) => `${m.role}: ${m.content}`).join("\n\n"), "text"));
    } else if (r.prompt !== undefined) {
      add("prompt", pre(r.prompt, "text"));
    }
    if (r.target !== undefined) add("target", target(r));
    if (r.learned === false) add("produced", produced(r));
    const d = r.first_divergence;
    if (d) {
      add("diverged", `at target token ${d.position + 1} of ${r.target_tokens}: expected ` +
        `${JSON.stringify(d.expected)} (p=${fixed(d.expected_prob, 3)}), predicted ` +
        `${JSON.stringify(d.predicted)} (p=${fixed(d.predicted_prob, 3)})`);
    }
    if (r.criterion) add("criterion", r.criterion);
    add("figures", `token accuracy ${fixed(r.token_accuracy, 2)} · mean NLL ${fixed(r.nll, 3)} ` +
      `nats/token · margin ${signed(r.margin)} nats`);
    if (r.cause) {
      const also = (r.causes || []).filter((c) => c !== r.cause);
      add("cause", r.cause + (also.length ? ` (also: ${also.join(", ")})` : ""));
      add("evidence", r.evidence || "");
      add("fix", r.suggestion || "");
    }
    if (r.gate_reason) add("gate", `${r.gate}: ${r.gate_reason}`);
    if (r.learned === true) {
      add("text", "learned samples carry no prompt or target text in the report: see the source");
    }
    td.append(dl);
    tr.append(td);
    return tr;
  }

  // The target, each token shaded by the probability the model gave it (red 0 → green 1), the
  // first divergent token outlined.
  function target(r) {
    const tokens = r.target_token_probs;
    if (!tokens) return pre(r.target, "text");
    const box = el("div", "text tokens");
    const at = r.first_divergence ? r.first_divergence.position : -1;
    tokens.forEach(([piece, p], i) => {
      const span = el("span", "tok" + (i === at ? " diverged" : i > at && at >= 0 ? " after" : ""),
        piece === "" ? "" : piece);
      span.style.background = `hsl(${Math.round(120 * p)}, ${p > 0.5 ? 55 : 75}%, 72%)`;
      span.title = `token ${i + 1}: ${JSON.stringify(piece)} p=${fixed(p, 4)}` +
        (i === at ? " ← greedy decoding leaves the target here" : "");
      box.append(span);
    });
    const wrap = el("div");
    const legend = el("p", "legend", "p(token) 0 ");
    legend.append(el("span", "scale"), " 1 · outlined: where greedy decoding leaves the target");
    wrap.append(box, legend);
    return wrap;
  }

  // What the model produced: the shared prefix dimmed, the rest marked.
  function produced(r) {
    const text = r.produced || "";
    const box = el("div", "text produced");
    const tokens = r.target_token_probs;
    const at = r.first_divergence ? r.first_divergence.position : 0;
    const prefix = tokens ? tokens.slice(0, at).map((t) => t[0]).join("") : "";
    if (prefix && text.startsWith(prefix)) {
      box.append(el("span", "same", prefix), el("span", "wrong", text.slice(prefix.length)));
    } else {
      box.append(el("span", "wrong", text));
    }
    if (text === "") box.append(el("span", "muted", "(nothing: the model ended its reply)"));
    return box;
  }

  function pre(text, cls) {
    return el("pre", cls, text);
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fixed(x, digits) {
    return typeof x === "number" ? x.toFixed(digits) : "–";
  }

  function signed(x) {
    return typeof x === "number" ? (x >= 0 ? "+" : "") + x.toFixed(3) : "–";
  }

  function writeHash() {
    const params = new URLSearchParams();
    for (const name of FILTERS) if (value(name)) params.set(name, value(name));
    for (const id of opened) params.append("open", id);
    if (page) params.set("page", String(page + 1));
    const hash = params.toString();
    if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const name of FILTERS) {
      const field = form.elements.namedItem(name);
      if (field) field.value = params.get(name) || "";
    }
    opened.clear();
    for (const id of params.getAll("open")) opened.add(id);
    page = Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1);
  }

  form.addEventListener("input", () => { page = 0; apply(); });
  document.getElementById("filter-reset").addEventListener("click", () => {
    form.reset(); opened.clear(); page = 0; apply();
  });
  document.getElementById("page-prev").addEventListener("click", () => { page--; draw(); writeHash(); });
  document.getElementById("page-next").addEventListener("click", () => { page++; draw(); writeHash(); });
  // A click on a chart's bar (or a baseline line) filters the table by it; a second click clears.
  for (const bar of document.querySelectorAll("[data-filter]")) {
    const choose = () => {
      const field = form.elements.namedItem(bar.dataset.filter);
      if (!field) return;
      field.value = field.value === bar.dataset.value ? "" : bar.dataset.value;
      page = 0;
      apply();
      document.getElementById("samples").scrollIntoView({ behavior: "smooth" });
    };
    bar.addEventListener("click", choose);
    bar.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
  }
  window.addEventListener("hashchange", () => { readHash(); apply(); });

  // Every record, once the document is parsed: the view the #fragment asks for.
  function load() {
    records = JSON.parse(document.getElementById("ilp-data").textContent).samples;
    loaded = true;
    readHash();
    apply();
    performance.mark("ilp-loaded");
    document.body.dataset.loaded = "true";
  }

  // The first screen: the report's first page in report order (a #fragment view waits for
  // every record). The benchmark times this mark.
  if (!location.hash.slice(1)) {
    matching = records.map((_, i) => i);
    draw();
  }
  performance.mark("ilp-ready");
  document.body.dataset.ready = "true";
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
  else load();
})();
