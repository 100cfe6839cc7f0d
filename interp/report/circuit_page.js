(function () {
"use strict";
if (window.interpCircuit) return;
function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]; }); }
function fmt(x, d) {
  if (x === null || x === undefined) return "n/a";
  var text = Number(x).toFixed(d === undefined ? 4 : d);
  return /^-0\.?0*$/.test(text) ? text.slice(1) : text;  // no "-0.000" for a tiny negative
}

window.interpCircuit = function (root, D) {
  var L = D.n_layers, H = D.n_heads, E = D.edges, K = E.length;
  var slider = root.querySelector(".ic-slider"), box = root.querySelector(".ic-n");
  var status = root.querySelector(".ic-status"), note = root.querySelector(".ic-note");
  var holder = root.querySelector(".ic-svg"), tip = root.querySelector(".ic-tip"), sizes = root.querySelector(".ic-sizes");
  var W = Math.max(700, holder.clientWidth || 1040), RH = Math.max(16, Math.min(34, 640 / (L + 2)));
  // Attention columns: one per head (h0..), and one "attention" column for layers whose attention is a single
  // node a{l} (post-norm blocks, D.layer_nodes); a graph has either kind, or both if its layers mix them.
  var layerNode = {}, nLayerNodes = 0;
  (D.layer_nodes || []).forEach(function (l) { if (!layerNode[l]) { layerNode[l] = true; nLayerNodes++; } });
  var hasHeads = nLayerNodes < L, hasLayer = nLayerNodes > 0, COL = hasHeads ? H : 0, NC = COL + (hasLayer ? 1 : 0);
  var left = 52, CW = (W - left - 20) / (NC + 1.4), HT = (L + 2) * RH + 40;

  // ---- positions: execution order and (x, y) per node name
  function parse(name) {
    var m;
    if (name === "embed") return {layer: -1, order: -1};
    if (name === "logits") return {layer: L, order: 1e9};
    if ((m = /^a(\d+)\.h(\d+)$/.exec(name))) return {layer: +m[1], head: +m[2], order: +m[1] * (H + 1) + +m[2]};
    if ((m = /^m(\d+)$/.exec(name))) return {layer: +m[1], mlp: true, order: +m[1] * (H + 1) + H};
    if ((m = /^a(\d+)/.exec(name))) return {layer: +m[1], attn: true, order: +m[1] * (H + 1)};
    return {layer: -1, order: -0.5};
  }
  var P = {}, mlpX = left + (NC + 0.9) * CW, layerX = left + (COL + 0.5) * CW;
  // embed and logits: under/over the head columns; without them, between the attention and MLP columns
  var endX = hasHeads ? left + (NC * CW) / 2 : (layerX + mlpX) / 2;
  function rowY(layer) { return 22 + (L - layer) * RH + RH / 2; }
  function pos(name) {
    if (P[name]) return P[name];
    var p = parse(name), y = rowY(p.layer), x = endX;
    if (p.head !== undefined) x = left + (p.head + 0.5) * CW;
    if (p.attn) x = layerX;
    if (p.mlp) { x = mlpX; y -= RH * 0.42; }
    // edges within a column bow outwards: the layer-node column's to the left, the others' to the right
    P[name] = {x: x, y: y, order: p.order, layer: p.layer, bow: p.attn && !hasHeads ? -1 : 1};
    return P[name];
  }

  // ---- top-n selection, then pruning as interp.circuits.evaluation.prune does it
  function feeds(e) { return D.feeds[e[1] + "|" + e[2]] || []; }
  function circuit(n) {
    var sel = E.slice(0, Math.max(0, Math.min(n, K))), into = {}, inputsOf = {}, names = {}, i, j, u;
    sel.forEach(function (e) {
      names[e[0]] = 1;
      feeds(e).forEach(function (v) { names[v] = 1; (into[v] = into[v] || []).push(e); (inputsOf[v] = inputsOf[v] || {})[e[1] + "|" + e[2]] = 1; });
    });
    var order = Object.keys(names).sort(function (a, b) { return pos(a).order - pos(b).order; });
    var reached = {embed: true};
    order.forEach(function (v) { if (v !== "embed") reached[v] = (into[v] || []).some(function (e) { return reached[e[0]]; }); });
    var kept = sel.filter(function (e) { return reached[e[0]]; }), out = {};
    kept.forEach(function (e) { (out[e[0]] = out[e[0]] || []).push(e); });
    var usefulInput = {"logits|logits": true}, useful = {};
    for (i = order.length - 1; i >= 0; i--) {
      u = order[i];
      useful[u] = (out[u] || []).some(function (e) { return usefulInput[e[1] + "|" + e[2]]; });
      if (useful[u]) for (j in inputsOf[u] || {}) usefulInput[j] = true;
    }
    var final = kept.filter(function (e) { return useful[e[0]] && usefulInput[e[1] + "|" + e[2]]; });
    return {edges: final, useful: useful};
  }
  function drawnOf(c) {  // (from, to, edge): a k/v edge into a KV head goes to each circuit head that reads it
    var lines = [];
    c.edges.forEach(function (e) {
      if (e[2] === "logits") { lines.push([e[0], "logits", e]); return; }
      var readers = feeds(e).filter(function (v) { return c.useful[v]; });
      (readers.length ? readers : feeds(e)).forEach(function (v) { lines.push([e[0], v, e]); });
    });
    return lines;
  }

  // ---- static grid: every node of the model as a faint dot, layer and column labels
  var grid = [], l, h;
  function dot(name) { var p = pos(name); grid.push('<circle class="ic-dot" data-node="' + name + '" cx="' + p.x + '" cy="' + p.y + '" r="2.5"/>'); }
  for (l = 0; l < L; l++) {
    grid.push('<text class="ic-lab" x="' + (left - 8) + '" y="' + (rowY(l) + 4) + '" text-anchor="end">L' + l + "</text>");
    if (layerNode[l]) dot("a" + l);
    else for (h = 0; h < H; h++) dot("a" + l + ".h" + h);
    dot("m" + l);
  }
  function column(x, text) { grid.push('<text class="ic-lab ic-col" x="' + x + '" y="' + (HT - 6) + '" text-anchor="middle">' + text + "</text>"); }
  if (hasHeads) for (h = 0; h < H; h++) column(pos("a0.h" + h).x, "h" + h);
  if (hasLayer) column(layerX, CW > 80 ? "attention" : "attn");
  column(mlpX, "MLP");

  var current = null, lines = [], pinned = null;
  function draw(n) {
    n = Math.max(1, Math.min(K, Math.round(n)));
    current = {n: n, c: circuit(n)};
    lines = drawnOf(current.c);
    var top = 0, inCircuit = {embed: 1, logits: 1};
    lines.forEach(function (t) { top = Math.max(top, Math.abs(t[2][3])); inCircuit[t[0]] = 1; inCircuit[t[1]] = 1; });
    var order = lines.map(function (t, i) { return i; }).sort(function (a, b) { return Math.abs(lines[a][2][3]) - Math.abs(lines[b][2][3]); });
    var parts = ['<svg width="' + W + '" height="' + HT + '" class="ic-graph" viewBox="0 0 ' + W + " " + HT + '">'].concat(grid);
    order.forEach(function (i) {
      var t = lines[i], a = pos(t[0]), b = pos(t[1]), e = t[2], my = (a.y + b.y) / 2, rel = Math.sqrt(Math.abs(e[3]) / (top || 1));  // sqrt: one dominant edge (often embed -> m0) does not flatten the rest
      // edges within one column bow sideways so that they do not run through the nodes between their ends
      var bow = Math.abs(a.x - b.x) < 1 ? a.bow * Math.min(CW * 0.45, 0.25 * Math.abs(a.y - b.y)) : 0;
      var d = "M" + a.x.toFixed(1) + " " + a.y.toFixed(1) + " C" + (a.x + bow).toFixed(1) + " " + my.toFixed(1) + " " + (b.x + bow).toFixed(1) + " " + my.toFixed(1) + " " + b.x.toFixed(1) + " " + b.y.toFixed(1);
      parts.push('<path class="ic-edge ic-' + esc(e[2]) + (e[3] < 0 ? " ic-neg" : "") + '" data-i="' + i + '" d="' + d + '" stroke-width="' +
        (0.5 + 5.5 * rel).toFixed(2) + '" stroke-opacity="' + (0.12 + 0.78 * rel).toFixed(2) + '"/>');
    });
    Object.keys(inCircuit).forEach(function (name) {
      var p = pos(name), info = D.nodes[name] || {}, colour = D.colours[info.role || "head"] || "#1f77b4";
      var r = name === "embed" || name === "logits" ? 9 : 6.5;
      parts.push('<circle class="ic-node" data-node="' + esc(name) + '" cx="' + p.x + '" cy="' + p.y + '" r="' + r + '" fill="' + colour + '"/>');
      parts.push('<text class="ic-name" x="' + (p.x + r + 2) + '" y="' + (p.y - 3) + '">' + esc(name) + "</text>");
    });
    parts.push("</svg>");
    holder.innerHTML = parts.join("");
    pinned = null;
    slider.value = String(toSlider(n));
    box.value = String(n);
    var row = null;
    D.curve.forEach(function (r) { if (r.n === n) row = r; });
    var text = "top " + n + " of " + D.n_graph_edges + " edges by |score|, pruned: <b>" + current.c.edges.length + " circuit edges</b>, " +
      (Object.keys(inCircuit).length) + " nodes, " + lines.length + " lines drawn. ";
    if (row) text += "Exact faithfulness <b>" + fmt(row.faithfulness, 3) + "</b> (evaluated at this size).";
    else {
      var lo = null, hi = null;
      D.curve.forEach(function (r) { if (r.n < n) lo = r; if (r.n > n && !hi) hi = r; });
      text += "Not evaluated at this size; exact faithfulness " + (lo ? "at n=" + lo.n + ": " + fmt(lo.faithfulness, 3) : "") +
        (lo && hi ? ", " : "") + (hi ? "at n=" + hi.n + ": " + fmt(hi.faithfulness, 3) : "") + ".";
    }
    if (D.selection !== "top") text += " (The curve's circuits used " + esc(D.selection) + " selection; the graph shows top-n.)";
    status.innerHTML = text;
    Array.prototype.forEach.call(sizes.querySelectorAll("button"), function (b) { b.classList.toggle("ic-on", +b.dataset.n === n); });
    root.dataset.drawn = String(lines.length);
    root.dataset.edges = String(current.c.edges.length);
    return current;
  }
  // log-scale slider: 0..1000 -> 1..K
  function fromSlider(v) { return Math.max(1, Math.round(Math.exp(Math.log(Math.max(K, 1)) * v / 1000))); }
  function toSlider(n) { return K <= 1 ? 1000 : Math.round(1000 * Math.log(n) / Math.log(K)); }

  // ---- hover and click
  function place(ev) {  // below right of the pointer, or left / above it where the window ends
    tip.style.left = "0px"; tip.style.top = "0px";
    var w = tip.offsetWidth, h = tip.offsetHeight, x = ev.clientX + 14, y = ev.clientY + 10;
    if (x + w > window.innerWidth - 4) x = Math.max(4, ev.clientX - 14 - w);
    if (y + h > window.innerHeight - 4) y = Math.max(4, ev.clientY - 10 - h);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  holder.addEventListener("mouseover", function (ev) {
    var t = ev.target, html = null;
    if (t.classList.contains("ic-edge")) {
      var line = lines[+t.dataset.i], e = line[2], key = e[0] + "->" + e[1] + "|" + e[2], rank = E.indexOf(e) + 1;
      html = "<b>" + esc(e[0]) + " \u2192 " + esc(e[1]) + "</b> (" + esc(e[2]) + ")" + (e[1] !== line[1] ? ", read by " + esc(line[1]) : "") +
        "<br>score " + fmt(e[3]) + " (rank " + rank + ")" + (key in D.exact ? "<br>exact effect (single-edge patching) " + fmt(D.exact[key]) : "");
    } else if (t.classList.contains("ic-node")) {
      var name = t.dataset.node, info = D.nodes[name] || {};
      html = "<b>" + esc(name) + "</b>" + (info.roles ? "<br>roles: " + esc(info.roles) : "") +
        (info.dla !== null && info.dla !== undefined ? "<br>DLA " + fmt(info.dla) : "") +
        (info.eap !== null && info.eap !== undefined ? "<br>node score " + fmt(info.eap) : "") +
        "<br>" + lines.filter(function (l) { return l[1] === name; }).length + " in, " + lines.filter(function (l) { return l[0] === name; }).length + " out (click: paths to the logits)";
    }
    if (html) { tip.innerHTML = html; tip.style.display = "block"; place(ev); }
  });
  holder.addEventListener("mousemove", function (ev) { if (tip.style.display === "block") place(ev); });
  holder.addEventListener("mouseout", function () { tip.style.display = "none"; });
  function highlight(name) {
    var svg = holder.querySelector("svg"), onPath = {}, nodes = {}, stack = [name];
    nodes[name] = 1;
    while (stack.length) {
      var u = stack.pop();
      lines.forEach(function (t, i) { if (t[0] === u) { onPath[i] = 1; if (!nodes[t[1]]) { nodes[t[1]] = 1; stack.push(t[1]); } } });
    }
    svg.classList.add("ic-dim");
    Array.prototype.forEach.call(svg.querySelectorAll(".ic-edge"), function (p) { p.classList.toggle("ic-hl", !!onPath[p.dataset.i]); });
    Array.prototype.forEach.call(svg.querySelectorAll(".ic-node"), function (c) { c.classList.toggle("ic-hl", !!nodes[c.dataset.node]); });
    pinned = name;
    note.textContent = name + ": " + Object.keys(onPath).length + " edge(s) on its paths to the logits (click the background to clear).";
    return Object.keys(onPath).length;
  }
  holder.addEventListener("click", function (ev) {
    if (ev.target.classList.contains("ic-node")) highlight(ev.target.dataset.node);
    else { var svg = holder.querySelector("svg"); svg.classList.remove("ic-dim"); pinned = null; note.textContent = defaultNote; }
  });

  // ---- controls
  slider.addEventListener("input", function () { draw(fromSlider(+slider.value)); });
  box.addEventListener("change", function () { draw(+box.value || 1); });
  box.max = String(K);
  D.curve.forEach(function (r) {
    var b = document.createElement("button");
    b.type = "button"; b.dataset.n = String(r.n);
    b.textContent = "n=" + r.n + ": " + r.n_edges + " edges, " + fmt(r.faithfulness, 3) + (r.n === D.chosen_n ? " \u2605" : "");
    if (r.n > K) { b.disabled = true; b.title = "only the top " + K + " edges are embedded in this page"; }
    else b.addEventListener("click", function () { draw(r.n); });
    sizes.appendChild(b);
  });

  // ---- first view: the chosen circuit, cut to at most D.cap circuit edges
  var n0 = Math.min(D.chosen_n, K), defaultNote = "";
  if (circuit(n0).edges.length > D.cap) {
    var lo = 1, hi = n0;
    while (lo < hi) { var mid = Math.ceil((lo + hi) / 2); if (circuit(mid).edges.length <= D.cap) lo = mid; else hi = mid - 1; }
    defaultNote = "The chosen circuit (top " + D.chosen_n + ", " + D.chosen_edges + " edges, exact faithfulness " + fmt(D.chosen_faithfulness, 3) +
      ") has more than " + D.cap + " edges; the first view shows the top " + lo + ". Move the slider (or click \u2605) to see it all.";
    n0 = lo;
  } else {
    defaultNote = "First view: the chosen circuit (top " + D.chosen_n + ", the smallest evaluated size reaching the target faithfulness" +
      (D.target !== null && D.target !== undefined ? " " + D.target : "") + ").";
  }
  if (D.chosen_n > K) defaultNote += " Only the top " + K + " edges by |score| are embedded in this page.";
  note.textContent = defaultNote;
  draw(n0);

  // ---- test hook (tests/report/test_circuit_page_browser.py)
  var hash = window.location.hash || "";
  if (hash.indexOf("test-") >= 0) {
    var result = {first: {n: current.n, edges: current.c.edges.length, drawn: holder.querySelectorAll("path.ic-edge").length}};
    var m = /test-slider=(\d+)/.exec(hash);
    if (m) {
      slider.value = m[1];
      slider.dispatchEvent(new Event("input"));
      result.after = {n: current.n, edges: current.c.edges.length, drawn: holder.querySelectorAll("path.ic-edge").length};
    }
    if (hash.indexOf("test-curve") >= 0) result.curve = D.curve.filter(function (r) { return r.n <= K; }).map(function (r) { return [r.n, circuit(r.n).edges.length]; });
    if (hash.indexOf("test-click") >= 0 && lines.length) {
      var pick = lines[0][0];  // the latest head with an edge: a few paths, not all of them
      lines.forEach(function (t) { if (t[0][0] === "a" && pos(t[0]).order > pos(pick).order) pick = t[0]; });
      result.click = {node: pick, edges: highlight(pick)};
    }
    result.tooltip = (function () {
      var p = holder.querySelector("path.ic-edge");
      if (!p) return "";
      p.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: 5, clientY: 5}));
      var text = tip.textContent;
      tip.style.display = "none";
      return text;
    })();
    var pre = document.getElementById("interp-test") || document.body.appendChild(document.createElement("pre"));
    pre.id = "interp-test";
    pre.hidden = true;
    result.errors = window.interpErrors || [];
    pre.textContent = JSON.stringify(result);
  }
};
})();
