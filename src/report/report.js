// tlens report: draws every chart from the JSON in #tlens-data. No network, no libraries.
"use strict";
(function () {
  window.addEventListener("error", function (e) {
    document.body.dataset.error = String(e.message || e);
  });
  var data = JSON.parse(document.getElementById("tlens-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var rendered = 0;
  var tooltip = document.getElementById("tooltip");

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function done(node) {
    node.dataset.rendered = "1";
    rendered += 1;
  }
  function tok(s) {
    return JSON.stringify(s);
  }
  function short(s, n) {
    var t = s.replace(/\n/g, "\u21b5");
    return t.length > n ? t.slice(0, n - 1) + "\u2026" : t;
  }
  // 0 -> white, 1 -> deep blue.
  function seq(v) {
    var x = Math.max(0, Math.min(1, v));
    var r = Math.round(255 - x * (255 - 33)), g = Math.round(255 - x * (255 - 75)), b = Math.round(255 - x * (255 - 170));
    return "rgb(" + r + "," + g + "," + b + ")";
  }
  // Negative -> red, positive -> blue, scaled by max |v|.
  function div(v, max) {
    var x = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
    return x >= 0 ? seq(x) : "rgb(" + 255 + "," + Math.round(255 + x * 200) + "," + Math.round(255 + x * 210) + ")";
  }
  function showTip(ev, text) {
    tooltip.textContent = text;
    tooltip.hidden = false;
    tooltip.style.left = ev.clientX + 14 + "px";
    tooltip.style.top = ev.clientY + 10 + "px";
  }
  function hideTip() {
    tooltip.hidden = true;
  }
  function fmt(v) {
    return (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3));
  }

  // An attention heatmap on a canvas: pattern is [q][k] flattened, n x n.
  function heatmap(node, pattern, tokens, title) {
    var n = tokens.length;
    var cell = Math.max(2, Math.min(14, Math.floor(240 / n)));
    var canvas = el("canvas", { width: n * cell, height: n * cell, "aria-label": title });
    var ctx = canvas.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, n * cell, n * cell);
    for (var q = 0; q < n; q++) {
      for (var k = 0; k <= q; k++) {
        ctx.fillStyle = seq(pattern[q * n + k]);
        ctx.fillRect(k * cell, q * cell, cell, cell);
      }
    }
    canvas.addEventListener("mousemove", function (ev) {
      var r = canvas.getBoundingClientRect();
      var k = Math.floor((ev.clientX - r.left) / cell), q = Math.floor((ev.clientY - r.top) / cell);
      if (q < 0 || k < 0 || q >= n || k >= n) return hideTip();
      showTip(ev, title + "\nquery " + q + " " + tok(tokens[q]) + "\nkey " + k + " " + tok(tokens[k]) +
        "\nattention " + pattern[q * n + k].toFixed(3));
    });
    canvas.addEventListener("mouseleave", hideTip);
    node.appendChild(canvas);
    done(node);
  }

  function headFigure(parent, label, pattern, tokens, caption) {
    var fig = el("figure", { "class": "head-fig" });
    fig.appendChild(el("figcaption", {}, caption));
    var node = el("div", { "data-chart": "attention", "data-head": label });
    fig.appendChild(node);
    parent.appendChild(fig);
    heatmap(node, pattern, tokens, label);
  }

  function summary() {
    var m = data.model;
    var text = data.model_name + ": " + m.n_layers + " layers, " + m.n_heads + " heads per layer, d_model " + m.d_model +
      ", vocabulary " + m.d_vocab + ", context " + m.n_ctx + (m.attn_only ? ", attention only" : ", with MLPs") +
      (m.normalization ? ", " + m.normalization : ", no normalisation") + ". Prompt: " +
      data.prompt_tokens.map(tok).join(" ") + ". Top predictions: " +
      data.predictions.map(function (p) { return tok(p[0]) + " " + (100 * p[1]).toFixed(1) + "%"; }).join(", ") + ".";
    document.getElementById("summary").textContent = text;
  }

  function scoreTables() {
    var node = document.querySelector('[data-chart="scores"]');
    var s = data.scores;
    document.getElementById("scores-help").textContent =
      "Measured on " + s.batch + " sequences " + (s.bos === null ? "[r, r]" : "[BOS, r, r]") + " of " + s.seq_len + " random tokens r repeated (seed " + s.seed +
      "). Induction: attention from each repeated token to the token after its first occurrence. Previous token: " +
      "attention to the position before. Duplicate token: attention to the first occurrence itself.";
    var wrap = el("div", { "class": "score-tables" });
    [["Induction", s.induction], ["Previous token", s.prev_token], ["Duplicate token", s.duplicate]].forEach(function (t) {
      var table = el("table", { "class": "scores", "data-score": t[0] });
      table.appendChild(el("caption", {}, t[0]));
      var head = el("tr");
      head.appendChild(el("th", {}, "layer \\ head"));
      for (var h = 0; h < t[1][0].length; h++) head.appendChild(el("th", {}, "H" + h));
      table.appendChild(head);
      t[1].forEach(function (row, l) {
        var tr = el("tr");
        tr.appendChild(el("th", {}, "L" + l));
        row.forEach(function (v, h) {
          var td = el("td", { title: "L" + l + "H" + h + ": " + v.toFixed(4) }, v.toFixed(2));
          td.style.background = seq(v);
          if (v > 0.6) td.style.color = "#fff";
          tr.appendChild(td);
        });
        table.appendChild(tr);
      });
      wrap.appendChild(table);
    });
    node.appendChild(wrap);
    done(node);
  }

  function inductionPatterns() {
    var s = data.scores;
    var heads = [];
    s.induction.forEach(function (row, l) {
      row.forEach(function (v, h) { heads.push([v, l, h]); });
    });
    heads.sort(function (a, b) { return b[0] - a[0]; });
    var parent = document.getElementById("induction-patterns");
    heads.slice(0, 3).forEach(function (x) {
      var label = "L" + x[1] + "H" + x[2];
      headFigure(parent, label, s.patterns[x[1]][x[2]], data.score_tokens, label + " (induction " + x[0].toFixed(2) + ")");
    });
  }

  function promptPatterns() {
    var parent = document.getElementById("prompt-patterns");
    data.prompt_patterns.forEach(function (layer, l) {
      var row = el("div", { "class": "layer-row" });
      layer.forEach(function (pattern, h) {
        headFigure(row, "L" + l + "H" + h, pattern, data.prompt_tokens, "L" + l + "H" + h);
      });
      parent.appendChild(row);
    });
  }

  function lens() {
    var node = document.querySelector('[data-chart="lens"]');
    var L = data.lens, text = data.lens_token_text;
    var rows = L.labels.length, cols = data.prompt_tokens.length;
    document.getElementById("lens-help").textContent =
      "Each residual-stream snapshot through the final norm (fresh statistics) and the unembedding. Colour: the " +
      "probability of the target (below each column: the next prompt token, and the model's own prediction at the " +
      "end); text: the top token. Hover a cell for the top " + L.top[0][0].length + ".";
    var cw = 64, ch = 24, left = 84, top = 34, bottom = 34;
    var w = left + cols * cw + 10, h = top + rows * ch + bottom;
    var root = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img" });
    for (var p = 0; p < cols; p++) {
      root.appendChild(svg("text", { x: left + p * cw + cw / 2, y: top - 8, "text-anchor": "middle", "class": "label" },
        short(data.prompt_tokens[p], 9)));
      root.appendChild(svg("text", { x: left + p * cw + cw / 2, y: top + rows * ch + 16, "text-anchor": "middle", "class": "label" },
        "\u2192" + short(text[L.targets[p]] || "#" + L.targets[p], 8)));
    }
    L.labels.forEach(function (label, r) {
      root.appendChild(svg("text", { x: left - 6, y: top + r * ch + ch / 2 + 4, "text-anchor": "end", "class": "label" }, label));
      for (var p = 0; p < cols; p++) {
        var prob = L.target_probs[r][p];
        var best = L.top[r][p][0];
        var g = svg("g", { "data-cell": r + "," + p });
        g.appendChild(svg("rect", { x: left + p * cw, y: top + r * ch, width: cw - 1, height: ch - 1, fill: seq(prob) }));
        var t = svg("text", { x: left + p * cw + cw / 2, y: top + r * ch + ch / 2 + 4, "text-anchor": "middle" },
          short(text[best.id] || "#" + best.id, 8));
        if (prob > 0.6) t.setAttribute("style", "fill:#fff");
        g.appendChild(t);
        g.appendChild(svg("title", {}, label + ", position " + p + "\ntarget " + tok(text[L.targets[p]] || "") + ": " +
          prob.toFixed(3) + "\n" + L.top[r][p].map(function (x) { return tok(text[x.id] || "#" + x.id) + " " + x.prob.toFixed(3); }).join("\n")));
        root.appendChild(g);
      }
    });
    node.appendChild(root);
    done(node);
  }

  function bars(node, items) {
    var max = 0;
    items.forEach(function (it) { max = Math.max(max, Math.abs(it.value)); });
    var bh = 16, left = 90, width = 260, right = 60;
    var h = items.length * bh + 10, w = left + width + right;
    var mid = left + width / 2;
    var root = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img" });
    items.forEach(function (it, i) {
      var len = max > 0 ? (Math.abs(it.value) / max) * (width / 2) : 0;
      var x = it.value >= 0 ? mid : mid - len;
      var y = 5 + i * bh;
      root.appendChild(svg("text", { x: left - 6, y: y + bh - 4, "text-anchor": "end", "class": "label" }, it.label));
      var bar = svg("rect", { x: x, y: y + 2, width: Math.max(len, 0.5), height: bh - 4,
        fill: it.value >= 0 ? "#2f5fd0" : "#c8412f", "data-bar": it.label });
      bar.appendChild(svg("title", {}, it.label + ": " + it.value.toFixed(4)));
      root.appendChild(bar);
      root.appendChild(svg("text", { x: left + width + 4, y: y + bh - 4 }, fmt(it.value)));
    });
    root.appendChild(svg("line", { x1: mid, x2: mid, y1: 0, y2: h, stroke: "#888", "stroke-width": 1 }));
    node.appendChild(root);
    done(node);
  }

  function dla() {
    var d = data.dla;
    var what = "logit of " + tok(data.dla_target) + (data.dla_against !== null ? " minus logit of " + tok(data.dla_against) : "");
    document.getElementById("dla-help").textContent =
      "How much each component writes directly into the " + what + " at position " + d.position + " (token " +
      tok(data.prompt_tokens[d.position]) + "), through the final norm's cached scale. The model's value: " + fmt(d.logit) + ".";
    bars(document.querySelector('[data-chart="dla-heads"]'), d.heads);
    bars(document.querySelector('[data-chart="dla-layers"]'), d.layers);
    if (d.neurons) {
      bars(document.querySelector('[data-chart="dla-neurons"]'), d.neurons);
    } else {
      document.getElementById("dla-neurons-figure").remove();
    }
  }

  // A grid of patching results, coloured by the share of the clean-minus-corrupted metric the patch restores.
  function patchGrid(node, g, clean, corrupted) {
    var cw = 56, ch = 22, left = 70, top = 30;
    var w = left + g.columns.length * cw + 10, h = top + g.rows.length * ch + 10;
    var root = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img" });
    g.columns.forEach(function (c, j) {
      root.appendChild(svg("text", { x: left + j * cw + cw / 2, y: top - 8, "text-anchor": "middle", "class": "label" }, short(c, 8)));
    });
    g.rows.forEach(function (r, i) {
      root.appendChild(svg("text", { x: left - 6, y: top + i * ch + ch / 2 + 4, "text-anchor": "end", "class": "label" }, r));
      g.values[i].forEach(function (v, j) {
        var share = clean !== corrupted ? (v - corrupted) / (clean - corrupted) : 0;
        var cell = svg("rect", { x: left + j * cw, y: top + i * ch, width: cw - 1, height: ch - 1, fill: div(share, 1), "data-cell": i + "," + j });
        cell.appendChild(svg("title", {}, r + ", " + g.columns[j] + ": " + fmt(v) + " (" + (100 * share).toFixed(0) + "% restored)"));
        root.appendChild(cell);
      });
    });
    node.appendChild(root);
    done(node);
  }

  function patching() {
    var p = data.patching;
    document.getElementById("patching-help").textContent =
      "Clean run: " + data.patching_tokens.map(tok).join(" ") + ". The corrupted run changes position " + data.patching_changed +
      " to " + tok(data.patching_answers[1]) + ", so the continuation by induction changes. Metric: logit of " +
      tok(data.patching_answers[0]) + " minus logit of " + tok(data.patching_answers[1]) + " at the last position: clean " +
      fmt(p.clean) + ", corrupted " + fmt(p.corrupted) + ". Each cell: the metric with that one activation patched from the " +
      "clean run into the corrupted one (colour: the share of the difference it restores).";
    patchGrid(document.querySelector('[data-chart="patching-resid"]'), p.resid_pre, p.clean, p.corrupted);
    patchGrid(document.querySelector('[data-chart="patching-heads"]'), p.heads, p.clean, p.corrupted);
  }

  summary();
  scoreTables();
  inductionPatterns();
  promptPatterns();
  lens();
  dla();
  patching();
  document.body.dataset.chartsRendered = String(rendered);
  console.log("tlens report: rendered " + rendered + " charts");
})();
