// sidedns service map: who looks up whom, drawn as SVG from /api/v1/graph,
// with the problems from /api/v1/problems and small time charts. Values go
// into the DOM as text nodes or attributes, never as markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  // POLL_MS keeps a new edge on screen within 2 s of its first lookup;
  // behind the table view the map is read only to know it is there.
  const POLL_MS = 1000, POLL_HIDDEN_MS = 10000;
  let timer = null;

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  const HEALTH_FILL = { healthy: "#2da44e", degraded: "#d4a72c", unhealthy: "#cf222e", stopped: "#8c959f" };
  const KIND_FILL = { host: "#6e7781", name: "#8250df", external: "#0969da", remote: "#1b7c83", file: "#9a6700" };
  function nodeFill(n) {
    return HEALTH_FILL[n.health] || KIND_FILL[n.kind] || "#6e7781";
  }

  // label names a node inside its column: a remote host's column names the
  // host, so its nodes name their project.
  function label(n) {
    return n.kind === "remote" && n.project ? n.project + "/" + n.name : n.name;
  }
  // fullName names a node outside its column, in the list of its lookups.
  function fullName(n) {
    if (n.kind === "remote") return label(n) + " on " + n.host;
    if (n.kind === "file") return n.name + " (records file)";
    return n.name;
  }

  let graph = { nodes: [], edges: [], series: [] };
  let selected = null; // node id whose edges are listed

  // layout places queriers the table does not know (the host) on the
  // left; then this host's services, containers and records-file entries
  // in columns by compose project; then a column for each other host of
  // the cluster, with the services it publishes; and external domains and
  // bare names at the right side.
  function layout(nodes) {
    const cols = new Map(); // column key -> nodes
    const titles = new Map(); // column key -> label
    const order = [];
    const placed = new Set();
    function put(key, title, n) {
      if (!cols.has(key)) { cols.set(key, []); titles.set(key, title); order.push(key); }
      cols.get(key).push(n);
      placed.add(n.id);
    }
    const inner = nodes.filter((n) => n.kind === "service" || n.kind === "container" || n.kind === "file");
    const projects = [...new Set(inner.map((n) => n.project || ""))].sort();
    const remote = nodes.filter((n) => n.kind === "remote");
    const hosts = [...new Set(remote.map((n) => n.host))].sort();
    for (const n of nodes.filter((n) => n.kind === "host")) put("host", "host", n);
    for (const p of projects) for (const n of inner.filter((n) => (n.project || "") === p)) put("p:" + p, p || "no project", n);
    for (const h of hosts) for (const n of remote.filter((n) => n.host === h)) put("r:" + h, "remote host " + h, n);
    // External domains, bare names, and any kind this page does not know.
    for (const n of nodes.filter((n) => !placed.has(n.id))) put("ext", "external", n);
    const colW = 190, rowH = 56, top = 40;
    const pos = new Map();
    let height = 0;
    order.forEach((key, i) => {
      const list = cols.get(key).sort((a, b) => (label(a) < label(b) ? -1 : label(a) > label(b) ? 1 : 0));
      list.forEach((n, j) => pos.set(n.id, { x: 90 + i * colW, y: top + 20 + j * rowH }));
      height = Math.max(height, top + 20 + list.length * rowH);
    });
    return { pos, order, titles, colW, width: Math.max(400, 90 + order.length * colW), height: Math.max(200, height) };
  }

  function edgeWidth(e) {
    // Grows with the rate, slowly: 1 px at a lookup a minute, ~9 px at 100/s.
    return Math.min(10, 1 + Math.log2(1 + e.rate * 60));
  }

  function drawMap() {
    const box = $("map");
    box.replaceChildren();
    const L = layout(graph.nodes);
    box.setAttribute("viewBox", `0 0 ${L.width} ${L.height}`);
    box.setAttribute("height", L.height);
    // An arrowhead at the owner's end says which way the lookups go.
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 22, refY: 5, markerWidth: 10, markerHeight: 10, orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
    defs.append(marker);
    box.append(defs);
    L.order.forEach((key, i) => {
      const x = 90 + i * L.colW;
      box.append(svg("rect", { x: x - 80, y: 6, width: L.colW - 30, height: L.height - 12, rx: 8, class: "group", "data-group": key }));
      box.append(svg("text", { x, y: 26, "text-anchor": "middle", class: "group-label", "data-group": key }, L.titles.get(key)));
    });
    for (const e of graph.edges) {
      const a = L.pos.get(e.from), b = L.pos.get(e.to);
      if (!a || !b) continue;
      // Bend left-to-right edges up and the others down, so that lookups
      // both ways between two nodes are two curves.
      const bend = a.x < b.x || (a.x === b.x && a.y < b.y) ? -24 : 24;
      const mx = (a.x + b.x) / 2 + (a.x === b.x ? bend * 2 : 0), my = (a.y + b.y) / 2 + (a.x === b.x ? 0 : bend);
      const path = svg("path", {
        d: `M${a.x},${a.y} Q${mx},${my} ${b.x},${b.y}`,
        class: "edge" + (e.failing ? " failing" : ""),
        "stroke-width": edgeWidth(e).toFixed(1),
        "marker-end": "url(#arrow)",
        "data-from": e.from, "data-to": e.to,
      });
      path.append(svg("title", {}, `${e.from} → ${e.to}: ${e.queries} lookups, ${e.nxdomain} NXDOMAIN, ${e.servfail} SERVFAIL, ${e.nodata} NODATA`));
      box.append(path);
    }
    for (const n of graph.nodes) {
      const p = L.pos.get(n.id);
      const g = svg("g", { class: "node" + (n.id === selected ? " selected" : ""), "data-node": n.id, "data-kind": n.kind, tabindex: 0 });
      g.append(svg("circle", { cx: p.x, cy: p.y, r: 11, fill: nodeFill(n) }));
      g.append(svg("text", { x: p.x, y: p.y + 26, "text-anchor": "middle" }, label(n)));
      g.append(svg("title", {}, `${n.kind} ${fullName(n)}${n.health ? " (" + n.health + ")" : ""}`));
      g.addEventListener("click", () => { selected = n.id; drawMap(); drawNodeEdges(); });
      box.append(g);
    }
    $("map-empty").hidden = graph.nodes.length > 0;
  }

  function edgeRow(e, dir, other) {
    return el("li", { class: "edge-row" + (e.failing ? " failing" : ""), "data-dir": dir },
      dir === "out" ? "→ " : "← ", el("strong", {}, other), ` ${e.queries} lookups`,
      e.nxdomain ? `, ${e.nxdomain} NXDOMAIN` : "", e.servfail ? `, ${e.servfail} SERVFAIL` : "",
      e.nodata ? `, ${e.nodata} NODATA` : "", `, ${Math.round(e.cacheHitShare * 100)}% cached`,
      el("span", { class: "muted" }, " (" + e.names.join(", ") + ")"));
  }

  function drawNodeEdges() {
    const box = $("node-edges");
    if (!selected) { box.replaceChildren(el("p", { class: "empty" }, "Click a node to list its lookups.")); return; }
    const name = (id) => fullName(graph.nodes.find((n) => n.id === id) || { name: id });
    const out = graph.edges.filter((e) => e.from === selected);
    const inc = graph.edges.filter((e) => e.to === selected);
    box.replaceChildren(el("h3", {}, name(selected)),
      el("ul", { class: "edge-list" },
        ...out.map((e) => edgeRow(e, "out", name(e.to))),
        ...inc.map((e) => edgeRow(e, "in", name(e.from)))));
    if (out.length + inc.length === 0) box.append(el("p", { class: "empty" }, "No lookups in the window."));
  }

  // chart draws series as lines with a dot per step that has data.
  function chart(id, lines, fmt) {
    const box = $(id);
    box.replaceChildren();
    const pts = graph.series || [];
    const W = 300, H = 90, pad = 4;
    box.setAttribute("viewBox", `0 0 ${W} ${H + 14}`);
    let maxV = 0;
    for (const p of pts) for (const l of lines) if (p[l.key] != null) maxV = Math.max(maxV, p[l.key]);
    if (maxV === 0) maxV = 1;
    const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, pts.length - 1);
    const y = (v) => H - pad - (v * (H - 2 * pad)) / maxV;
    box.append(svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
    for (const l of lines) {
      const coords = [];
      pts.forEach((p, i) => {
        if (p[l.key] == null) return;
        coords.push(`${x(i).toFixed(1)},${y(p[l.key]).toFixed(1)}`);
        box.append(svg("circle", { cx: x(i), cy: y(p[l.key]), r: 1.6, fill: l.color, class: "pt", "data-v": p[l.key] }));
      });
      if (coords.length > 1) box.append(svg("polyline", { points: coords.join(" "), fill: "none", stroke: l.color, "stroke-width": 1.2 }));
    }
    box.append(svg("text", { x: W - pad, y: H + 12, "text-anchor": "end", class: "chart-max" }, "max " + fmt(maxV)));
    box.append(svg("text", { x: pad, y: H + 12, class: "chart-max" }, lines.map((l) => l.label).join(" · ")));
  }

  function drawCharts() {
    const qps = (v) => v.toFixed(v < 10 ? 1 : 0) + "/s";
    chart("chart-qps", [
      { key: "local", color: "#2da44e", label: "local" },
      { key: "cache", color: "#0969da", label: "cache" },
      { key: "upstream", color: "#bf8700", label: "upstream" },
    ], qps);
    chart("chart-ratio", [{ key: "cacheRatio", color: "#0969da", label: "cache hit ratio" }], (v) => Math.round(v * 100) + "%");
    chart("chart-latency", [
      { key: "upstreamP50", color: "#2da44e", label: "upstream p50" },
      { key: "upstreamP95", color: "#cf222e", label: "p95" },
    ], (v) => v.toFixed(1) + " ms");
  }

  function drawProblems(p) {
    const items = [];
    for (const f of p.failing || []) {
      items.push(el("li", { class: "problem", "data-problem": "failing" },
        el("strong", {}, f.name), ` keeps failing: ${f.nxdomain} NXDOMAIN, asked by `, el("strong", {}, f.from.name)));
    }
    for (const n of p.unhealthy || []) {
      items.push(el("li", { class: "problem", "data-problem": "unhealthy" },
        el("strong", {}, (n.project ? n.project + "/" : "") + n.name),
        n.always ? " has had no healthy replica all through the last 15 minutes"
          : " has no healthy replica, since " + new Date(n.since).toLocaleTimeString([], { hour12: false })));
    }
    for (const f of p.failOpen || []) {
      items.push(el("li", { class: "problem", "data-problem": "failopen" },
        el("strong", {}, f.name), ` on ${f.network} fell open: answered with unhealthy containers`));
    }
    $("problems").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "Nothing is failing.")]));
  }

  async function poll() {
    try {
      const [g, p] = await Promise.all([
        fetch("api/v1/graph").then((r) => (r.ok ? r.json() : null)),
        fetch("api/v1/problems").then((r) => (r.ok ? r.json() : null)),
      ]);
      if (g) {
        graph = g;
        drawMap();
        drawNodeEdges();
        drawCharts();
      }
      if (p) drawProblems(p);
      $("view-map").hidden = !g; // the map is off: no button for it
    } catch (e) {
      // The connection pill of the table view shows the server is away.
    }
    clearTimeout(timer);
    timer = setTimeout(poll, document.body.dataset.view === "map" ? POLL_MS : POLL_HIDDEN_MS);
  }

  function showView(name) {
    for (const b of document.querySelectorAll("[data-view]")) b.setAttribute("aria-pressed", String(b.dataset.view === name));
    const was = document.body.dataset.view;
    document.body.dataset.view = name;
    if (name === "map" && was !== "map") poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const b of document.querySelectorAll("[data-view]")) b.addEventListener("click", () => showView(b.dataset.view));
    showView("table");
    drawNodeEdges();
    poll();
  });
})();
