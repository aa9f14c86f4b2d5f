// jobpulse dashboard: our own small script. The pages work without it; it makes them live
// (EventSource on /v1/events and /v1/jobs/{id}/events), draws the chunk grid and the throughput
// chart on canvases, asks before acting, and keeps relative times current.
"use strict";

(function () {
  const STATES = ["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"];
  const WORDS = { PENDING: "Pending", PROCESSING: "Processing", CANCELLING: "Cancelling", COMPLETED: "Completed", FAILED: "Failed", CANCELLED: "Cancelled" };
  const SYMBOLS = { PENDING: "\u25cb", PROCESSING: "\u25d4", CANCELLING: "\u25cc", COMPLETED: "\u2713", FAILED: "\u2715", CANCELLED: "\u2298" };
  const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

  // --- formatting: the same rules as http/present.py -----------------------------------------
  function num(n) { return Number(n || 0).toLocaleString("en-US"); }
  function percent(p) { p = Number(p || 0); return p >= 100 ? "100%" : (Math.floor(p * 10) / 10).toFixed(1) + "%"; }
  function duration(s) {
    if (s === null || s === undefined || isNaN(s)) return "\u2014";
    s = Math.round(s);
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m < 10 && s % 60 ? m + " min " + (s % 60) + " s" : m + " min";
    const h = Math.floor(m / 60);
    if (h < 48) return m % 60 ? h + " h " + (m % 60) + " min" : h + " h";
    return h % 24 ? Math.floor(h / 24) + " d " + (h % 24) + " h" : Math.floor(h / 24) + " d";
  }
  function relative(iso) {
    const delta = (Date.now() - Date.parse(iso)) / 1000;
    if (Math.abs(delta) < 5) return "just now";
    const span = duration(Math.abs(delta)).split(" ").slice(0, 2).join(" ");
    return delta > 0 ? span + " ago" : "in " + span;
  }
  function exact(iso) { return iso.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC"); }
  function stateName(s) { return String(s || "").replace(/^(JOB|CHUNK)_STATE_/, ""); }

  function badge(state, testid) {
    const span = document.createElement("span");
    span.className = "badge s-" + state.toLowerCase();
    span.dataset.state = state;
    if (testid) span.dataset.testid = testid;
    const sym = document.createElement("span");
    sym.className = "sym"; sym.setAttribute("aria-hidden", "true"); sym.textContent = SYMBOLS[state] || "";
    const word = document.createElement("span");
    word.className = "word"; word.textContent = WORDS[state] || state;
    span.append(sym, " ", word);
    return span;
  }
  function timeEl(iso) {
    const t = document.createElement("time");
    t.dateTime = iso; t.title = exact(iso); t.dataset.rel = ""; t.textContent = relative(iso);
    return t;
  }
  function setTime(cell, iso) { if (cell && iso) cell.replaceChildren(timeEl(iso)); }
  function setProgress(cell, state, pct) {
    if (!cell) return;
    const bar = cell.querySelector("progress");
    if (bar) {
      bar.className = "progress s-" + state.toLowerCase();
      bar.value = Math.min(100, Number(pct || 0));
      bar.textContent = percent(pct);
    }
    const text = cell.querySelector("[data-testid=job-progress]");
    if (text) text.textContent = percent(pct);
  }
  function setState(cell, state) {
    if (cell && (!cell.firstElementChild || cell.firstElementChild.dataset.state !== state)) cell.replaceChildren(badge(state, "job-state"));
  }

  // The ETA by the server's rules (present.eta): time left at the average rate since the first claim,
  // recomputed as time passes (so it never stays frozen), "stalled" once a started job has had no
  // chunk running and no change for STALL_MS.
  const STALL_MS = 60000;
  function etaText(el, now) {
    const d = el.dataset;
    if (TERMINAL.has(d.state)) return ["\u2014", ""];
    const start = d.start ? Date.parse(d.start) : null;
    if (start === null) return ["\u2014", "Not started yet"];
    if (Number(d.running) === 0 && now - Date.parse(d.updated) >= STALL_MS) {
      return ["stalled", "No chunk has run for a minute: is a worker running for this kind?"];
    }
    const done = Number(d.done), elapsed = (now - start) / 1000;
    if (done <= 0 || elapsed < 1) return ["\u2014", "Not enough work done to estimate"];
    return [duration(Math.max(0, (Number(d.total) - done) / (done / elapsed))), "At the average rate since the job started"];
  }
  function showEta(el, now) {
    const [text, title] = etaText(el, now || Date.now());
    if (el.textContent !== text) el.textContent = text;
    el.title = title;
  }
  // An ETA element's data from a job of the events (proto3 JSON: defaults left out).
  function setEta(cell, job) {
    const el = cell && cell.querySelector("[data-eta]");
    if (!el) return;
    const p = job.progress || {};
    el.dataset.state = stateName(job.state);
    el.dataset.start = job.startTime || "";
    el.dataset.done = p.itemsDone || "0";
    el.dataset.total = p.itemsTotal || job.totalItems || "0";
    el.dataset.running = (job.chunksSummary || {}).processing || "0";
    el.dataset.updated = job.updateTime || "";
    showEta(el);
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-rel]").forEach((t) => {
      const text = relative(t.dateTime);
      if (t.textContent !== text) t.textContent = text;
    });
    const now = Date.now();
    document.querySelectorAll("[data-eta]").forEach((el) => showEta(el, now));
  }

  // The dashboard's own requests: a 429 (the key's rate limit) is waited out and tried again, never
  // shown to the person looking at the page.
  async function quietFetch(url, options) {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(url, options);
      if (response.status !== 429 || attempt >= 6) return response;
      const after = Number(response.headers.get("retry-after"));
      await new Promise((r) => setTimeout(r, (after > 0 ? after * 1000 : 250 * 2 ** attempt) + Math.random() * 200));
    }
  }

  // --- connection state --------------------------------------------------------------------
  const live = document.getElementById("live");
  function showLive(kind, text) {
    if (!live) return;
    live.hidden = false;
    live.classList.toggle("on", kind === "on");
    live.classList.toggle("off", kind === "off");
    live.dataset.state = kind;
    live.querySelector(".text").textContent = text;
  }

  // An EventSource that says how it is doing, and starts again (from where it was) when the server
  // ended it with an error status instead of a dropped connection (which it retries by itself).
  function follow(url, handlers, finished, fromId) {
    let source = null, lastId = fromId || "", closed = false;
    function open() {
      let u = url;
      if (lastId) u += (u.includes("?") ? "&" : "?") + (handlers.resumeParam || "cursor") + "=" + encodeURIComponent(lastId);
      source = new EventSource(u);
      source.onopen = () => showLive("on", "Live");
      source.onerror = () => {
        if (closed) return;
        if (source.readyState === EventSource.CLOSED) {
          if (finished && finished()) { showLive("", "Finished"); return; }
          showLive("off", "Disconnected, retrying\u2026");
          setTimeout(open, 3000);
        } else {
          showLive("off", "Reconnecting\u2026");
        }
      };
      for (const [name, fn] of Object.entries(handlers)) {
        if (typeof fn !== "function") continue;
        source.addEventListener(name, (ev) => {
          if (ev.lastEventId) lastId = ev.lastEventId;
          showLive("on", "Live");
          fn(ev.data ? JSON.parse(ev.data) : null, ev);
        });
      }
    }
    open();
    return { close() { closed = true; if (source) source.close(); } };
  }

  // --- confirmation ------------------------------------------------------------------------
  const dialog = document.getElementById("confirm-dialog");
  function ask(text, withReason) {
    return new Promise((resolve) => {
      if (!dialog || !dialog.showModal) { resolve(window.confirm(text) ? { ok: true, reason: "" } : { ok: false }); return; }
      dialog.querySelector(".confirm-text").textContent = text;
      const extra = dialog.querySelector(".confirm-extra");
      extra.replaceChildren();
      let reason = null;
      if (withReason) {
        const label = document.createElement("label");
        label.textContent = "Reason (optional)";
        reason = document.createElement("textarea");
        reason.maxLength = 1024; reason.dataset.testid = "confirm-reason";
        label.append(reason);
        extra.append(label);
      }
      dialog.returnValue = "";
      dialog.onclose = () => resolve({ ok: dialog.returnValue === "ok", reason: reason ? reason.value : "" });
      dialog.showModal();
      (reason || dialog.querySelector("[data-testid=confirm-no]")).focus();
    });
  }
  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.dataset.confirmed) return;
    let text = form.dataset.confirm;
    if (form.hasAttribute("data-confirm-bulk")) {
      const n = document.querySelectorAll("input[name=job_id][form=bulk]:checked").length;
      const action = ev.submitter ? ev.submitter.value : "";
      text = { cancel: "Cancel", retry: "Retry", delete: "Delete" }[action] + " " + n + " selected job" + (n === 1 ? "" : "s") + "?";
      if (action === "delete") text += " This cannot be undone.";
      form.dataset.action = action;
    }
    if (!text) return;
    ev.preventDefault();
    const answer = await ask(text, form.hasAttribute("data-reason"));
    if (!answer.ok) return;
    if (form.hasAttribute("data-reason")) {
      let input = form.querySelector("input[name=reason]");
      if (!input) { input = document.createElement("input"); input.type = "hidden"; input.name = "reason"; form.append(input); }
      input.value = answer.reason;
    }
    if (form.dataset.action) {
      let input = form.querySelector("input[name=action]");
      if (!input) { input = document.createElement("input"); input.type = "hidden"; input.name = "action"; form.append(input); }
      input.value = form.dataset.action;
    }
    form.dataset.confirmed = "yes";
    form.submit();
  });

  // --- jobs page -----------------------------------------------------------------------------
  // On a phone the filters fold away so the jobs come first (one tap opens them); on a wide screen they
  // are always open.
  function foldFilters() {
    const box = document.querySelector(".filter-box");
    if (!box) return;
    const narrow = window.matchMedia("(max-width: 720px)");
    if (narrow.matches && !box.hasAttribute("data-keep-open")) box.open = false;
    narrow.addEventListener("change", (ev) => { if (!ev.matches) box.open = true; });
  }

  function jobsPage() {
    foldFilters();
    const table = document.querySelector("table[data-feed]");
    const bulk = document.getElementById("bulk");
    function selection() {
      const n = document.querySelectorAll("input[name=job_id][form=bulk]:checked").length;
      if (!bulk) return;
      bulk.querySelector(".selected-count").textContent = n;
      bulk.querySelectorAll("button").forEach((b) => { b.disabled = n === 0; });
    }
    document.addEventListener("change", (ev) => {
      if (ev.target.classList.contains("select-all")) {
        document.querySelectorAll("input[name=job_id][form=bulk]").forEach((c) => { c.checked = ev.target.checked; });
      }
      if (ev.target.name === "state" && ev.target.form && ev.target.form.matches(".filters")) ev.target.form.requestSubmit();
      selection();
    });
    selection();
    if (!table) return;
    const tbody = table.querySelector("tbody");
    const shown = new Set(table.dataset.states.trim().split(/\s+/).filter(Boolean));
    const insert = table.dataset.liveInsert === "yes";
    const pageSize = Number(table.dataset.pageSize);
    const after = table.dataset.createdAfter ? Date.parse(table.dataset.createdAfter) : null;
    const before = table.dataset.createdBefore ? Date.parse(table.dataset.createdBefore) : null;
    const total = document.querySelector("[data-testid=total]");
    const count = document.querySelector("[data-testid=page-count]");

    function update(row, job) {
      const rev = Number(job.revision || 0);
      if (rev && rev < Number(row.dataset.revision || 0)) return;
      row.dataset.revision = rev;
      const state = stateName(job.state);
      const s = job.chunksSummary || {};
      setState(row.querySelector("[data-field=state]"), state);
      setProgress(row.querySelector("[data-field=progress]"), state, (job.progress || {}).percent);
      const chunks = row.querySelector("[data-field=chunks]");
      chunks.querySelector(".done").textContent = num(s.completed);
      chunks.querySelector(".total").textContent = num(s.total);
      const failed = Number(s.failed || 0);
      const fcell = row.querySelector("[data-field=failed]");
      fcell.replaceChildren();
      const f = document.createElement("span");
      f.className = failed ? "bad" : "muted"; f.textContent = num(failed);
      fcell.append(f);
      setTime(row.querySelector("[data-field=updated]"), job.updateTime);
      setEta(row.querySelector("[data-field=eta]"), job);
      row.classList.toggle("stale", shown.size > 0 && !shown.has(state));
      row.title = shown.size > 0 && !shown.has(state) ? "No longer matches the states shown" : "";
    }
    // A new job's row, built from the job the feed event carries (the same cells as the server's
    // _macros.html job_row): no request per new job, however many arrive at once.
    function cell(cls, label, field) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      if (label) td.dataset.label = label;
      if (field) td.dataset.field = field;
      return td;
    }
    function build(job) {
      const tr = document.createElement("tr");
      tr.dataset.testid = "job-row"; tr.dataset.jobId = job.id; tr.dataset.revision = "0";
      tr.dataset.created = job.createTime || "";
      const name = job.displayName || job.id;
      const sel = cell("sel");
      const box = document.createElement("input");
      box.type = "checkbox"; box.name = "job_id"; box.value = job.id; box.setAttribute("form", "bulk");
      box.setAttribute("aria-label", "Select " + name);
      sel.append(box);
      const nameCell = cell("name");
      const link = document.createElement("a");
      link.href = "/jobs/" + encodeURIComponent(job.id); link.title = name; link.textContent = name;
      nameCell.append(link);
      if (job.displayName) {
        const id = document.createElement("div");
        id.className = "id muted"; id.textContent = job.id;
        nameCell.append(id);
      }
      const kind = cell("kind", "Kind"); kind.textContent = job.kind || "";
      const state = cell("state", "State", "state");
      const prog = cell("prog", "Progress", "progress");
      const bar = document.createElement("progress");
      bar.max = 100; bar.setAttribute("aria-label", "Progress");
      const pct = document.createElement("span");
      pct.className = "pct"; pct.dataset.testid = "job-progress";
      prog.append(bar, " ", pct);
      const chunks = cell("num", "Chunks", "chunks");
      const done = document.createElement("span"); done.className = "done";
      const all = document.createElement("span"); all.className = "total";
      chunks.append(done, "/", all);
      const failed = cell("num", "Failed", "failed");
      const priority = cell("num", "Priority"); priority.textContent = String(job.priority || 0);
      const owner = cell("owner", "Owner"); owner.textContent = job.owner || "";
      const created = cell("when", "Created");
      if (job.createTime) created.append(timeEl(job.createTime));
      const updated = cell("when", "Updated", "updated");
      const eta = cell("when", "ETA", "eta");
      const etaEl = document.createElement("span"); etaEl.dataset.eta = "";
      eta.append(etaEl);
      tr.append(sel, nameCell, kind, state, prog, chunks, failed, priority, owner, created, updated, eta);
      update(tr, job);
      return tr;
    }
    function counts() {
      if (count) {
        count.querySelector(".shown").textContent = num(tbody.rows.length);
        if (total) count.querySelector(".of").textContent = total.textContent;
      }
    }
    function add(job) {
      const state = stateName(job.state);
      if (shown.size && !shown.has(state)) return;
      const created = Date.parse(job.createTime);
      if ((after && created < after) || (before && created >= before)) return;
      const row = build(job);
      row.classList.add("flash-row");
      tbody.prepend(row);
      while (tbody.rows.length > pageSize) tbody.lastElementChild.remove();
      if (total) total.textContent = num(Number(total.textContent.replace(/,/g, "")) + 1);
      const wrap = table.closest(".table-wrap");
      if (wrap && wrap.hidden) {
        wrap.hidden = false;
        const empty = document.querySelector("[data-testid=empty]");
        if (empty) empty.hidden = true;
      }
    }
    follow(table.dataset.feed, {
      change(msg) {
        let added = false;
        for (const job of msg.jobs || []) {
          const row = tbody.querySelector('tr[data-job-id="' + CSS.escape(job.id) + '"]');
          if (row) update(row, job);
          else if (insert && Number(job.revision) === 1) { add(job); added = true; }
          else if (!insert && Number(job.revision) === 1) { const note = document.querySelector(".new-jobs"); if (note) note.hidden = false; }
        }
        if (added) counts();
        for (const id of msg.deletedJobIds || []) {
          const row = tbody.querySelector('tr[data-job-id="' + CSS.escape(id) + '"]');
          if (row) { row.classList.add("stale"); row.title = "Deleted"; row.querySelector("[data-field=state]").textContent = "Deleted"; }
        }
      },
      heartbeat() {},
    });
  }

  // --- job page: header and chunk grid -------------------------------------------------------
  const GRID_VARS = ["--grid-pending", "--grid-processing", "--grid-completed", "--grid-failed", "--grid-cancelled"];
  function gridColours() {
    const css = getComputedStyle(document.documentElement);
    return GRID_VARS.map((v) => {
      const hex = css.getPropertyValue(v).trim().replace("#", "");
      return [parseInt(hex.slice(0, 2), 16), parseInt(hex.slice(2, 4), 16), parseInt(hex.slice(4, 6), 16)];
    });
  }

  function Grid(canvas, states) {
    this.canvas = canvas; this.states = states; this.focus = 0;
    this.colours = gridColours();
    this.layout();
  }
  Grid.prototype.layout = function () {
    const n = Math.max(1, this.states.length);
    const width = Math.max(200, this.canvas.parentElement.clientWidth);
    // The biggest square cell that fits every chunk in width x 480 px, 2 to 18 px.
    let cell = Math.floor(Math.sqrt((width * 480) / n));
    cell = Math.max(2, Math.min(18, cell));
    this.cell = cell;
    this.gap = cell >= 6 ? 1 : 0;
    this.cols = Math.max(1, Math.floor(width / cell));
    this.rows = Math.ceil(n / this.cols);
    this.canvas.width = this.cols * cell;
    this.canvas.height = this.rows * cell;
    // Never wider than its box (CSS max-width: 100%, height follows): a scrollbar that appears later
    // narrows the box before the grid is laid out again.
    this.canvas.style.width = this.canvas.width + "px";
    this.width = width;
    this.image = null;
  };
  Grid.prototype.draw = function () {
    const started = performance.now();
    const ctx = this.canvas.getContext("2d");
    const w = this.canvas.width, h = this.canvas.height;
    const image = ctx.createImageData(w, h);
    const px = image.data, cell = this.cell, inner = cell - this.gap, cols = this.cols;
    const colours = this.colours, states = this.states;
    for (let i = 0; i < states.length; i++) {
      const c = colours[states.charCodeAt(i) - 49] || colours[0];
      const x0 = (i % cols) * cell, y0 = Math.floor(i / cols) * cell;
      for (let y = 0; y < inner; y++) {
        let o = ((y0 + y) * w + x0) * 4;
        for (let x = 0; x < inner; x++, o += 4) { px[o] = c[0]; px[o + 1] = c[1]; px[o + 2] = c[2]; px[o + 3] = 255; }
      }
    }
    ctx.putImageData(image, 0, 0);
    this.drawFocus(ctx);
    return performance.now() - started;
  };
  Grid.prototype.paint = function (i) {
    const ctx = this.canvas.getContext("2d");
    const c = this.colours[this.states.charCodeAt(i) - 49] || this.colours[0];
    const x = (i % this.cols) * this.cell, y = Math.floor(i / this.cols) * this.cell, inner = this.cell - this.gap;
    ctx.clearRect(x, y, this.cell, this.cell);
    ctx.fillStyle = "rgb(" + c.join(",") + ")";
    ctx.fillRect(x, y, inner, inner);
  };
  Grid.prototype.set = function (i, digit) {
    if (i < 0 || i >= this.states.length) return;
    this.states = this.states.slice(0, i) + digit + this.states.slice(i + 1);
    this.paint(i);
    if (i === this.focus && document.activeElement === this.canvas) this.drawFocus();
  };
  Grid.prototype.setMany = function (changes) {
    if (changes.length > 200) {
      const chars = this.states.split("");
      for (const [i, d] of changes) if (i >= 0 && i < chars.length) chars[i] = d;
      this.states = chars.join("");
      this.draw();
    } else for (const [i, d] of changes) this.set(i, d);
  };
  Grid.prototype.drawFocus = function (ctx) {
    if (document.activeElement !== this.canvas) return;
    ctx = ctx || this.canvas.getContext("2d");
    const i = this.focus;
    const x = (i % this.cols) * this.cell, y = Math.floor(i / this.cols) * this.cell;
    ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--fg");
    ctx.lineWidth = Math.max(1, Math.min(2, this.cell / 4));
    ctx.strokeRect(x + 0.5, y + 0.5, Math.max(2, this.cell - 1), Math.max(2, this.cell - 1));
  };
  Grid.prototype.at = function (ev) {
    const r = this.canvas.getBoundingClientRect();
    const col = Math.floor(((ev.clientX - r.left) / r.width) * this.cols);
    const row = Math.floor(((ev.clientY - r.top) / r.height) * this.rows);
    const i = row * this.cols + col;
    return i >= 0 && i < this.states.length ? i : -1;
  };

  // The roles an artifact's caption names (an output's is not named).
  const ROLES = { ARTIFACT_ROLE_PREVIEW: "preview", ARTIFACT_ROLE_THUMBNAIL: "thumbnail", ARTIFACT_ROLE_LOG: "log", ARTIFACT_ROLE_RESULT: "result" };
  // A result a chunk reported, added to the page as it completes, or a preview while it runs (shown for
  // http(s) media): one per chunk and name, a later one of the name replacing the earlier.
  function addArtifact(a) {
    const list = document.querySelector(".artifact-list") || (() => {
      const ul = document.createElement("ul");
      ul.className = "artifact-list";
      const section = document.querySelector("[data-field=artifacts]");
      const empty = section.querySelector(".empty-results");
      if (empty) empty.remove();
      section.append(ul);
      return ul;
    })();
    const key = (a.chunkIndex || "0") + "/" + a.name;
    const old = list.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (old && old.dataset.uri === a.uri) return;
    const li = document.createElement("li");
    const fig = document.createElement("figure");
    fig.className = "artifact"; fig.dataset.key = key; fig.dataset.uri = a.uri || "";
    fig.dataset.chunk = a.chunkIndex || "0";
    const web = /^https?:\/\//i.test(a.uri || "");
    const top = (a.mediaType || "").split("/")[0].toLowerCase();
    if (web && top === "image") {
      const img = document.createElement("img");
      img.src = a.uri; img.alt = a.name || ""; img.loading = "lazy"; img.referrerPolicy = "no-referrer";
      fig.append(img);
    } else if (web && (top === "audio" || top === "video")) {
      const player = document.createElement(top);
      player.controls = true; player.preload = top === "audio" ? "none" : "metadata"; player.src = a.uri;
      fig.append(player);
    }
    const cap = document.createElement("figcaption");
    if (web) {
      const link = document.createElement("a");
      link.href = a.uri; link.rel = "noopener noreferrer"; link.target = "_blank"; link.textContent = a.name || a.uri;
      cap.append(link);
    } else {
      const name = document.createElement("span"); name.textContent = a.name || "";
      const code = document.createElement("code"); code.textContent = a.uri || "";
      cap.append(name, " ", code);
    }
    const meta = document.createElement("span");
    const role = ROLES[a.role] || "";
    meta.className = "muted";
    meta.textContent = " " + (a.mediaType || "") + " \u00b7 chunk " + (a.chunkIndex || "0") + (role ? " \u00b7 " + role : "");
    cap.append(meta);
    fig.append(cap); li.append(fig);
    if (old) old.closest("li").replaceWith(li); else list.append(li);
  }

  async function showChunk(jobId, index) {
    const panel = document.getElementById("chunk-panel");
    const response = await quietFetch("/jobs/" + encodeURIComponent(jobId) + "/chunks/" + index, { headers: { "x-fragment": "1" } });
    panel.innerHTML = response.ok ? await response.text() : "<p class='problem'>This chunk cannot be shown now (" + response.status + ").</p>";
    refreshTimes();
  }

  function jobPage() {
    const article = document.querySelector("article.job");
    const canvas = document.querySelector("canvas[data-testid=chunk-grid]");
    if (!article || !canvas) return;
    const jobId = article.dataset.jobId;
    const status = document.querySelector(".grid-status");
    let grid = null, finished = false;

    function header(job) {
      const state = stateName(job.state);
      setState(article.querySelector("[data-field=state]"), state);
      setProgress(article.querySelector("[data-field=progress]"), state, (job.progress || {}).percent);
      setEta(article.querySelector("[data-field=eta]"), job);
      const failedCount = article.querySelector("[data-field=failed-count]");
      if (failedCount) failedCount.textContent = num((job.chunksSummary || {}).failed);
      article.querySelector("[data-field=stage]").textContent = job.stage || "";
      article.querySelector("[data-field=message]").textContent = job.message || "";
      const items = article.querySelector("[data-field=items]");
      if (items) items.textContent = num((job.progress || {}).itemsDone);
      setTime(article.querySelector("[data-field=updated]"), job.updateTime);
      if (job.startTime) setTime(article.querySelector("[data-field=started]"), job.startTime);
      if (job.endTime) setTime(article.querySelector("[data-field=ended]"), job.endTime);
      const s = job.chunksSummary || {};
      for (const name of STATES) {
        const el = article.querySelector('[data-count="' + name + '"]');
        if (el) el.textContent = num(s[name.toLowerCase()]);
      }
      article.dataset.revision = job.revision;
      return state;
    }

    async function start() {
      const response = await quietFetch("/jobs/" + encodeURIComponent(jobId) + "/grid");
      if (!response.ok) { status.textContent = "The chunk grid cannot be loaded (" + response.status + "); reload to try again."; return; }
      const data = await response.json();
      grid = new Grid(canvas, data.states);
      const ms = grid.draw();
      canvas.dataset.drawMs = ms.toFixed(1);
      canvas.dataset.chunks = String(data.states.length);
      // The draw time stays in data-draw-ms for the tests and the bench; the page does not show it.
      status.textContent = "Click a chunk, or focus the grid and use the arrow keys and Enter.";
      if (TERMINAL.has(data.state)) finished = true;
      let endSeen = false;
      follow(article.dataset.events, {
        resumeParam: "after_revision",
        snapshot: apply, change: apply,
        end() { endSeen = true; finished = true; showLive("", "Finished"); setTimeout(() => location.reload(), 300); },
      }, () => finished || endSeen, String(data.revision));
      function apply(msg) {
        if (msg.job) {
          const state = header(msg.job);
          if (TERMINAL.has(state)) finished = true;
        }
        const changes = [];
        for (const c of msg.chunks || []) {
          changes.push([Number(c.index), String(STATES.indexOf(stateName(c.state)) + 1)]);
          for (const a of c.artifacts || []) addArtifact(a);
        }
        if (changes.length) grid.setMany(changes);
      }
    }

    canvas.addEventListener("click", (ev) => {
      if (!grid) return;
      const i = grid.at(ev);
      if (i < 0) return;
      grid.focus = i; canvas.focus(); grid.draw();
      showChunk(jobId, i);
    });
    canvas.addEventListener("focus", () => { if (grid) grid.draw(); });
    canvas.addEventListener("blur", () => { if (grid) grid.draw(); });
    canvas.addEventListener("keydown", (ev) => {
      if (!grid) return;
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: grid.cols, ArrowUp: -grid.cols, Home: -grid.focus, End: grid.states.length - 1 - grid.focus };
      if (ev.key in moves) {
        ev.preventDefault();
        grid.focus = Math.max(0, Math.min(grid.states.length - 1, grid.focus + moves[ev.key]));
        grid.draw();
        status.textContent = "Chunk " + grid.focus + ": " + WORDS[STATES[grid.states.charCodeAt(grid.focus) - 49]];
      } else if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        showChunk(jobId, grid.focus);
      }
    });
    document.querySelectorAll("a[data-chunk]").forEach((a) => a.addEventListener("click", () => showChunk(jobId, a.dataset.chunk)));
    // Laid out again whenever its box changes width (a window resized or turned, a scrollbar shown).
    let resizing = null;
    new ResizeObserver(() => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (grid && Math.max(200, canvas.parentElement.clientWidth) !== grid.width) { grid.layout(); grid.draw(); }
      }, 150);
    }).observe(canvas.parentElement);
    start();
  }

  // --- stats page: throughput chart ----------------------------------------------------------
  function drawChart(canvas, data) {
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.parentElement.clientWidth, height = 220;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    const css = getComputedStyle(document.documentElement);
    const points = data.points || [];
    const values = points.map((p) => p[1]);
    const max = Math.max(1, ...values);
    const left = 48, bottom = 22, top = 8, plotW = width - left - 8, plotH = height - top - bottom;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = css.getPropertyValue("--muted");
    ctx.strokeStyle = css.getPropertyValue("--line");
    for (let k = 0; k <= 4; k++) {
      const y = top + plotH - (plotH * k) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.fillText(num(Math.round((max * k) / 4)), 4, y + 4);
    }
    if (points.length) {
      const barW = plotW / points.length;
      ctx.fillStyle = css.getPropertyValue("--grid-completed");
      points.forEach((p, i) => {
        const h = (p[1] / max) * plotH;
        ctx.fillRect(left + i * barW, top + plotH - h, Math.max(1, barW - (barW > 3 ? 1 : 0)), h);
      });
      ctx.fillStyle = css.getPropertyValue("--muted");
      const first = new Date(points[0][0] / 1000), last = new Date(points[points.length - 1][0] / 1000);
      const fmt = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      ctx.fillText(fmt(first), left, height - 6);
      const lw = ctx.measureText(fmt(last)).width;
      ctx.fillText(fmt(last), left + plotW - lw, height - 6);
    }
    const total = values.reduce((a, b) => a + b, 0);
    const note = document.querySelector(".chart-note");
    if (note) note.textContent = num(total) + " chunks completed in this window; busiest minute " + num(Math.max(0, ...values)) + ".";
  }
  function statsPage() {
    const canvas = document.querySelector("canvas[data-testid=throughput-chart]");
    const holder = document.getElementById("throughput-data");
    if (!canvas || !holder) return;
    let data = JSON.parse(holder.textContent);
    drawChart(canvas, data);
    window.addEventListener("resize", () => drawChart(canvas, data));
    setInterval(async () => {
      const response = await quietFetch("/stats/throughput?hours=" + canvas.dataset.hours);
      if (response.ok) { data = await response.json(); drawChart(canvas, data); }
    }, 60000);
  }

  // The stats page lives on the same feed as the jobs page (/v1/events, this page's kind): a change
  // makes it read its own numbers again, at most once per REFRESH_MS however many jobs change.
  const REFRESH_MS = 2000;
  function liveStats() {
    const cards = document.querySelector("[data-live-part=cards][data-feed]");
    if (!cards) return;
    let last = 0, timer = null, running = false;
    async function refresh() {
      timer = null;
      if (running) { schedule(); return; }
      running = true; last = Date.now();
      try {
        const response = await quietFetch(location.pathname + location.search);
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const part of document.querySelectorAll("[data-live-part]")) {
          const fresh = doc.querySelector('[data-live-part="' + part.dataset.livePart + '"]');
          if (fresh) part.replaceChildren(...fresh.childNodes);
        }
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      } finally { running = false; }
    }
    function schedule() {
      if (timer === null) timer = setTimeout(refresh, Math.max(0, last + REFRESH_MS - Date.now()));
    }
    follow(cards.dataset.feed, { change: schedule, heartbeat() {} });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "jobs") jobsPage();
    if (page === "job") jobPage();
    if (page === "stats") { statsPage(); liveStats(); }
    // Over the key's rate limit: load the page again once a call will be admitted (a script, not a
    // <meta refresh>, which assistive technology users cannot stop).
    const reload = document.querySelector("[data-reload-after]");
    if ((page === "error" || page === "operation") && reload) setTimeout(() => location.reload(), Number(reload.dataset.reloadAfter) * 1000);
    refreshTimes();
    setInterval(refreshTimes, 5000);
  });
})();
