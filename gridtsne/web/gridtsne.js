/* gridtsne page: pan and zoom the mosaic, see what each image is, find an image by name.
 *
 * Reads the configuration inlined in index.html, the pyramid under mosaic_files/, and loads the
 * cell index (cells/<br>_<bc>.js) and search index (search/*.js) lazily as script tags, which
 * work from file:// and from a bucket without CORS. No build step, no dependency but
 * OpenSeadragon, whose copy ships with gridtsne and sits next to the page (openseadragon/), so
 * the page makes no request outside its own folder.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("gridtsne-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var statusEl = $("status");

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? "error" : "";
  }

  /* ---- lazily loaded index files ------------------------------------------------------ */

  var loads = {};
  // Each index file calls gridtsneData(name, data) when its script runs.
  window.gridtsneData = function (name, data) {
    var entry = loads[name];
    if (entry && !entry.done) { entry.done = true; entry.resolve(data); }
  };

  function load(name) {
    if (loads[name]) { return loads[name].promise; }
    var entry = { done: false };
    entry.promise = new Promise(function (resolve, reject) {
      entry.resolve = resolve;
      var script = document.createElement("script");
      script.src = name + ".js";
      script.async = true;
      script.onload = function () {
        script.remove();
        if (!entry.done) { entry.done = true; reject(new Error(name + ".js did not call gridtsneData")); }
      };
      script.onerror = function () {
        script.remove();
        entry.done = true;
        reject(new Error("could not load " + name + ".js"));
      };
      document.head.appendChild(script);
    });
    loads[name] = entry;
    return entry.promise;
  }

  /** The index entry [row, col, uri, label, width, height, bytes] of a cell, or null (hole). */
  function cellInfo(row, col) {
    var b = config.cellBlock;
    var name = "cells/" + Math.floor(row / b) + "_" + Math.floor(col / b);
    return load(name).then(function (data) {
      if (!data.byCell) {
        data.byCell = {};
        data.cells.forEach(function (c) { data.byCell[c[0] + "," + c[1]] = c; });
      }
      return data.byCell[row + "," + col] || null;
    }, function () { return null; });  // a block of holes has no file
  }

  /** A link a browser can open for an image URI. */
  function originalHref(uri) {
    var m;
    if (/^https?:\/\//i.test(uri) || /^file:\/\//i.test(uri)) { return uri; }
    if ((m = /^gs:\/\/([^/]+)\/(.*)$/.exec(uri))) {
      return "https://storage.googleapis.com/" + m[1] + "/" + encodeURI(m[2]);
    }
    if ((m = /^s3a?:\/\/([^/]+)\/(.*)$/.exec(uri))) {
      return "https://" + m[1] + ".s3.amazonaws.com/" + encodeURI(m[2]);
    }
    if (uri.charAt(0) === "/") { return "file://" + encodeURI(uri); }
    return encodeURI(uri);
  }

  function formatBytes(n) {
    if (n === null || n === undefined) { return ""; }
    if (n < 1024) { return n + " B"; }
    if (n < 1048576) { return (n / 1024).toFixed(1) + " KB"; }
    return (n / 1048576).toFixed(1) + " MB";
  }

  /* ---- the viewer ---------------------------------------------------------------------- */

  $("count").textContent = config.images.toLocaleString() + " images, " + config.rows + " × " +
    config.cols + " grid";
  config.overviews.forEach(function (name) {
    var a = document.createElement("a");
    a.href = name;
    a.textContent = name;
    a.target = "_blank";
    $("links").appendChild(a);
  });
  if (config.projector) {
    var p = document.createElement("a");
    p.href = "projector/projector_config.pbtxt";
    p.textContent = "projector/";
    p.title = "TensorBoard Projector export: tensorboard --logdir <this folder>/projector";
    $("links").appendChild(p);
  }

  var state = { hover: null, selected: null, opened: false };
  // The viewer: cellAt(point in element px), placeBoxes(hover, selected), fitCell(row, col).
  var view = typeof OpenSeadragon === "undefined" ? missingViewer() : openSeadragonView();

  function onOpen() {
    state.opened = true;
    var m = /cell=(\d+),(\d+)/.exec(location.hash);
    if (m) { jumpTo(parseInt(m[1], 10), parseInt(m[2], 10)); }
  }

  /** The {row, col} of mosaic pixel (x, y), or null outside the grid. */
  function cellOfPixel(x, y) {
    var col = Math.floor(x / config.cell), row = Math.floor(y / config.cell);
    if (row < 0 || col < 0 || row >= config.rows || col >= config.cols) { return null; }
    return { row: row, col: col };
  }

  function openSeadragonView() {
    var osdSrc = $("osd-script").src;
    var viewer = OpenSeadragon({
      id: "viewer",
      prefixUrl: osdSrc.slice(0, osdSrc.lastIndexOf("/") + 1) + "images/",
      tileSources: config.tileSource,
      // The 2-D canvas draws tiles from file:// and other origins; WebGL refuses "tainted" ones.
      drawer: "canvas",
      showNavigator: true,
      navigatorDrawer: "canvas",
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
      constrainDuringPan: true,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: true }
    });
    var hoverBox = document.createElement("div");
    hoverBox.className = "cell-hover";
    var selectBox = document.createElement("div");
    selectBox.className = "cell-selected";

    function item() { return viewer.world.getItemAt(0); }

    function cellAt(position) {
      if (!item()) { return null; }
      var p = item().viewerElementToImageCoordinates(position);
      return cellOfPixel(p.x, p.y);
    }

    function cellRect(row, col, margin) {
      var m = (margin || 0) * config.cell;
      return item().imageToViewportRectangle(col * config.cell - m, row * config.cell - m,
        config.cell + 2 * m, config.cell + 2 * m);
    }

    function placeBox(box, cell) {
      if (!cell) {
        if (box.parentNode) { viewer.removeOverlay(box); }
        return;
      }
      var rect = cellRect(cell.row, cell.col);
      if (box.parentNode) { viewer.updateOverlay(box, rect); } else { viewer.addOverlay(box, rect); }
    }

    new OpenSeadragon.MouseTracker({
      element: viewer.canvas,
      moveHandler: function (e) { hover(cellAt(e.position)); },
      leaveHandler: function () { hover(null); }
    });
    viewer.addHandler("canvas-click", function (e) {
      if (!e.quick) { return; }  // the end of a drag, not a click
      var cell = cellAt(e.position);
      if (cell) { select(cell.row, cell.col); } else { select(null); }
    });
    viewer.addHandler("open", function () {
      setStatus("");
      onOpen();
    });
    viewer.addHandler("open-failed", function (e) {
      setStatus("Could not open the mosaic: " + (e.message || "unknown error"), true);
    });
    return {
      mode: "openseadragon", viewer: viewer, cellAt: cellAt,
      placeBoxes: function (hoverCell, selectedCell) {
        placeBox(hoverBox, hoverCell);
        placeBox(selectBox, selectedCell);
      },
      fitCell: function (row, col) { viewer.viewport.fitBounds(cellRect(row, col, 2)); }
    };
  }

  /** No OpenSeadragon (an --osd_url that cannot be reached): say so; search still works. */
  function missingViewer() {
    var src = $("osd-script").getAttribute("src");
    setStatus("The viewer (OpenSeadragon, from " + src + ") could not be loaded. Render " +
      "without --osd_url to use the copy that ships with gridtsne.", true);
    return {
      mode: "none", viewer: null, cellAt: function () { return null; },
      placeBoxes: function () {}, fitCell: function () {}
    };
  }

  var shown = null;  // "row,col" currently in the panel
  function showInfo(cell) {
    var key = cell ? cell.row + "," + cell.col : null;
    shown = key;
    var info = $("info");
    if (!cell) { info.hidden = true; return; }
    cellInfo(cell.row, cell.col).then(function (entry) {
      if (shown !== key) { return; }  // the pointer moved on meanwhile
      info.hidden = false;
      info.dataset.row = cell.row;
      info.dataset.col = cell.col;
      var label = $("info-label"), link = $("info-link");
      if (!entry) {
        $("info-uri").textContent = "(empty cell)";
        info.dataset.uri = "";
        label.hidden = true;
        $("info-meta").textContent = "row " + cell.row + ", column " + cell.col;
        link.hidden = true;
        return;
      }
      var uri = entry[2];
      info.dataset.uri = uri;
      $("info-uri").textContent = uri;
      label.hidden = entry[3] === null || entry[3] === undefined;
      label.textContent = label.hidden ? "" : entry[3];
      var meta = [];
      if (entry[4] && entry[5]) { meta.push(entry[4] + " × " + entry[5] + " px"); }
      if (entry[6]) { meta.push(formatBytes(entry[6])); }
      meta.push("row " + cell.row + ", column " + cell.col);
      $("info-meta").textContent = meta.join(" · ");
      link.hidden = false;
      link.href = originalHref(uri);
    });
  }

  function sameCell(a, b) { return a && b && a.row === b.row && a.col === b.col; }

  function hover(cell) {
    if (sameCell(cell, state.hover) || (!cell && !state.hover)) { return; }
    state.hover = cell;
    view.placeBoxes(cell, state.selected);
    showInfo(cell || state.selected);
  }

  function select(row, col) {
    var cell = row === null ? null : { row: row, col: col };
    state.selected = cell;
    view.placeBoxes(state.hover, cell);
    showInfo(cell);
    if (cell && history.replaceState) {
      history.replaceState(null, "", "#cell=" + row + "," + col);
    }
  }

  function jumpTo(row, col) {
    view.fitCell(row, col);
    select(row, col);
  }

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { select(null); }
  });

  /* ---- search ---------------------------------------------------------------------------- */

  var MAX_CHUNKS = 8, MAX_RESULTS = 100;

  function search(query) {
    var q = query.trim().toLowerCase();
    var base = q.slice(q.lastIndexOf("/") + 1);
    var results = $("results");
    results.hidden = true;
    results.textContent = "";
    if (!base) { setStatus("Type the start of a file name, e.g. cat_0001.jpg."); return; }
    setStatus("Searching…");
    load(config.search.replace(/\.js$/, "")).then(function (dir) {
      // Chunks whose [first, last] key range can hold names starting with `base`.
      var chunks = dir.chunks.filter(function (c) {
        return c[1] >= base && c[0].slice(0, base.length) <= base;
      });
      return Promise.all(chunks.slice(0, MAX_CHUNKS).map(function (c) { return load(c[2]); }))
        .then(function (parts) { return { parts: parts, more: chunks.length > MAX_CHUNKS }; });
    }).then(function (found) {
      var hits = [];
      found.parts.forEach(function (part) {
        part.entries.forEach(function (e) {
          if (e[0].lastIndexOf(base, 0) === 0 &&
              (q.indexOf("/") < 0 || e[1].toLowerCase().indexOf(q) >= 0)) { hits.push(e); }
        });
      });
      var exact = hits.filter(function (e) { return e[0] === base; });
      if (hits.length === 0) { setStatus("No image named “" + query.trim() + "…”."); return; }
      if (hits.length === 1 || exact.length === 1) {
        var hit = hits.length === 1 ? hits[0] : exact[0];
        setStatus("Found " + hit[1]);
        jumpTo(hit[2], hit[3]);
        if (hits.length === 1) { return; }
      } else {
        setStatus(hits.length + (found.more || hits.length > MAX_RESULTS ? "+" : "") +
          " images match; pick one:");
      }
      hits.slice(0, MAX_RESULTS).forEach(function (e) {
        var li = document.createElement("li");
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = e[1];
        b.addEventListener("click", function () { jumpTo(e[2], e[3]); });
        li.appendChild(b);
        results.appendChild(li);
      });
      results.hidden = false;
    }).catch(function (err) { setStatus("Search failed: " + err.message, true); });
  }

  $("search-form").addEventListener("submit", function (e) {
    e.preventDefault();
    search($("search").value);
  });

  // For scripts and tests: the viewer and the page's state and actions.
  window.gridtsne = {
    viewer: view.viewer, mode: view.mode, config: config, state: state, select: select,
    jumpTo: jumpTo, search: search, cellAt: view.cellAt, cellInfo: cellInfo
  };
})();
