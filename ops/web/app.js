// sidedns live page. Every value from the server goes into the DOM through
// textContent (via el()), never innerHTML, so container names cannot inject
// markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // el builds an element; children are nodes or strings (as text nodes).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const HEALTH_TEXT = {
    healthy: "healthy",
    starting: "starting",
    unhealthy: "unhealthy",
    none: "no healthcheck",
  };

  function healthBadge(h) {
    const known = Object.prototype.hasOwnProperty.call(HEALTH_TEXT, h);
    return el("span", { class: "badge health health-" + (known ? h : "none"), title: "health: " + h },
      known ? HEALTH_TEXT[h] : h);
  }

  // Mirrors section 2.2: only running containers that are healthy or have no
  // healthcheck are answered (unless the name fails open).
  function eligible(c) {
    return c.state === "running" && (c.health === "healthy" || c.health === "none");
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleTimeString([], { hour12: false });
  }

  function byText(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function containerRow(c, addr) {
    const names = (addr ? addr.names : c.names).filter((n) => n !== c.name);
    const addrs = [];
    if (addr && addr.ipv4) addrs.push(el("code", { class: "ip" }, addr.ipv4));
    if (addr && addr.ipv6) addrs.push(el("code", { class: "ip" }, addr.ipv6));
    if (addrs.length === 0) addrs.push(el("span", { class: "muted" }, "no address"));
    const row = el("li", { class: "container" + (eligible(c) ? "" : " ineligible"), "data-container": c.name },
      el("div", { class: "c-head" },
        el("span", { class: "c-name" }, c.name),
        healthBadge(c.health),
        c.state !== "running" ? el("span", { class: "badge state state-" + c.state }, c.state) : null,
        c.drained ? el("span", { class: "badge state drained", title: "drained: left out of answers while others are left" }, "drained") : null,
        !c.drained && c.weight !== 100 ? el("span", { class: "badge state", title: "weight: how often it comes first, default 100" }, "weight " + c.weight) : null,
        ...(c.tags || []).map((t) => el("span", { class: "badge state", title: "tag" }, t)),
        eligible(c) ? null : el("span", { class: "note" }, "left out of answers"),
      ),
      el("div", { class: "c-addrs" }, ...addrs),
      names.length ? el("div", { class: "c-names" }, ...names.map((n) => el("span", { class: "name" }, n))) : null,
    );
    return row;
  }

  function serviceKey(c) {
    return c.project ? c.project + "/" + (c.service || c.name) : "\u0000" + c.name;
  }

  function serviceBlock(members) {
    const c0 = members[0].c;
    const title = c0.project
      ? el("h4", { class: "svc-title" }, c0.service || c0.name, " ", el("span", { class: "project" }, c0.project))
      : el("h4", { class: "svc-title" }, c0.name);
    members.sort((a, b) => byText(a.c.name, b.c.name));
    return el("div", { class: "service" }, title,
      el("ul", { class: "containers" }, ...members.map((m) => containerRow(m.c, m.addr))));
  }

  function networkBlock(title, net, members) {
    const groups = new Map();
    for (const m of members) {
      const k = serviceKey(m.c);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(m);
    }
    const keys = [...groups.keys()].sort(byText);
    const meta = [];
    if (net) {
      for (const s of net.subnets || []) meta.push(el("code", { class: "subnet" }, s));
      if (net.internal) meta.push(el("span", { class: "badge state" }, "internal"));
    }
    const count = members.length === 1 ? "1 container" : members.length + " containers";
    return el("section", { class: "network", "data-network": title },
      el("h3", {}, title, " ", ...meta, el("span", { class: "muted count" }, count)),
      keys.length
        ? el("div", { class: "services" }, ...keys.map((k) => serviceBlock(groups.get(k))))
        : el("p", { class: "empty" }, "No containers."),
    );
  }

  function renderNetworks(u) {
    const nets = u.networks || [];
    const members = new Map(nets.map((n) => [n.id, []]));
    const orphans = [];
    for (const c of u.containers || []) {
      if (!c.addresses || c.addresses.length === 0) {
        orphans.push({ c, addr: null });
        continue;
      }
      for (const a of c.addresses) {
        if (!members.has(a.network_id)) members.set(a.network_id, []);
        members.get(a.network_id).push({ c, addr: a });
      }
    }
    const byId = new Map(nets.map((n) => [n.id, n]));
    const blocks = [];
    const ids = [...members.keys()].sort((a, b) => {
      const na = byId.get(a), nb = byId.get(b);
      return byText(na ? na.name : a, nb ? nb.name : b);
    });
    for (const id of ids) {
      const n = byId.get(id);
      let title = n ? n.name : id;
      if (!n) {
        const m = members.get(id)[0];
        title = (m && m.addr && m.addr.network) || id;
      }
      blocks.push(networkBlock(title, n, members.get(id)));
    }
    if (orphans.length) blocks.push(networkBlock("(no network)", null, orphans));
    if (!blocks.length) blocks.push(el("p", { class: "empty" }, "No networks or containers yet."));
    $("networks").replaceChildren(...blocks);
  }

  function scalar(v) {
    if (v === null || v === undefined) return el("span", { class: "muted" }, "—");
    if (typeof v === "boolean") return el("span", { class: v ? "yes" : "no" }, v ? "yes" : "no");
    if (typeof v === "number") return el("span", { class: "num" }, Number.isInteger(v) ? v.toLocaleString("en") : String(Number(v.toFixed(3))));
    if (typeof v === "object") return el("code", {}, JSON.stringify(v));
    return el("span", {}, String(v));
  }

  // label turns a JSON key into a heading: "hits_total" -> "hits".
  function label(k) {
    return k.replace(/_total$/, "").replace(/_/g, " ");
  }

  function renderValue(v) {
    if (Array.isArray(v) && v.length && v.every((x) => x && typeof x === "object" && !Array.isArray(x))) {
      const cols = [];
      for (const row of v) for (const k of Object.keys(row)) if (!cols.includes(k)) cols.push(k);
      return el("table", {},
        el("thead", {}, el("tr", {}, ...cols.map((k) => el("th", { title: k }, label(k))))),
        el("tbody", {}, ...v.map((row) => el("tr", {}, ...cols.map((k) => el("td", {}, scalar(row[k])))))));
    }
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const dl = el("dl", {});
      for (const k of Object.keys(v).sort(byText)) dl.append(el("dt", { title: k }, label(k)), el("dd", {}, scalar(v[k])));
      return dl;
    }
    return el("p", {}, scalar(v));
  }

  function renderExtra(extra) {
    const keys = Object.keys(extra || {}).sort(byText);
    if (!keys.length) {
      $("extra").replaceChildren(el("p", { class: "empty" }, "No data."));
      return;
    }
    $("extra").replaceChildren(...keys.map((k) => el("div", { class: "extra-block", "data-extra": k },
      el("h3", {}, label(k)), renderValue(extra[k]))));
  }

  function renderEvents(events) {
    if (!events || !events.length) {
      $("events").replaceChildren(el("li", { class: "empty" }, "No events yet."));
      return;
    }
    $("events").replaceChildren(...events.map((e) => el("li", {},
      el("time", { datetime: e.time }, fmtTime(e.time)), " ",
      el("span", { class: "badge kind kind-" + e.kind }, e.kind), " ",
      el("span", { class: "action" }, e.action), " ",
      el("span", { class: "ev-name" }, e.name))));
  }

  function setPill(id, cls, text) {
    const p = $(id);
    p.className = "pill " + cls;
    p.textContent = text;
  }

  function render(u) {
    setPill("ready", u.ready ? "pill-ok" : "pill-wait", u.ready ? "ready" : "waiting for Docker sync");
    renderNetworks(u);
    renderExtra(u.extra);
    renderEvents(u.events);
    const nc = (u.containers || []).length, nn = (u.networks || []).length;
    $("summary").textContent = nn + " networks · " + nc + " containers · updated " +
      new Date().toLocaleTimeString([], { hour12: false });
  }

  function connect() {
    // EventSource reconnects by itself (the server sends retry: 2000).
    const es = new EventSource("api/v1/events");
    es.addEventListener("open", () => setPill("conn", "pill-ok", "live"));
    es.addEventListener("error", () => setPill("conn", "pill-bad", "reconnecting…"));
    es.addEventListener("update", (ev) => {
      try {
        render(JSON.parse(ev.data));
      } catch (err) {
        console.error("sidedns: bad update", err);
      }
    });
  }

  connect();
})();
