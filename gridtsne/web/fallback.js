/* gridtsne page: the built-in viewer used when OpenSeadragon cannot be loaded (offline, behind a
 * proxy, a blocked CDN). A canvas over the same Deep Zoom pyramid (mosaic_files/<level>/<x>_<y>):
 * drag to pan, wheel, double-click or the buttons to zoom; gridtsne.js adds hover, click and
 * search on top, as it does for OpenSeadragon. Plain <img> tiles, so it works from file:// and
 * from a bucket without CORS, like the rest of the page.
 */
(function () {
  "use strict";

  var MAX_PIXEL_RATIO = 4;   // screen px per mosaic px at the closest zoom (as OpenSeadragon)
  var MIN_ZOOM = 0.5;        // of the zoom that fits the whole mosaic
  var DRAG_PX = 4;           // a press that moves further is a drag, not a click
  var BACKGROUND = "#282828";

  /**
   * A viewer of the pyramid described by `source` ({width, height, tile, ext, url, cell}) in
   * `element`.
   * `on` has hover(point) and click(point), called with element coordinates ({x, y}) or null.
   */
  function FallbackViewer(element, source, on) {
    var W = source.width, H = source.height, T = source.tile;
    var maxLevel = Math.ceil(Math.log(Math.max(W, H)) / Math.LN2);
    // The coarsest level worth drawing: the whole mosaic in one tile.
    var baseLevel = Math.max(0, maxLevel - Math.ceil(Math.log(Math.max(W, H) / T) / Math.LN2));
    var canvas = document.createElement("canvas");
    canvas.className = "fallback-canvas";
    canvas.setAttribute("aria-label", element.getAttribute("aria-label") || "mosaic");
    element.appendChild(canvas);
    var ctx = canvas.getContext("2d");
    var tiles = {};               // "level/x_y" -> Image
    var view = { s: 1, ox: 0, oy: 0 };  // element px per mosaic px; mosaic px at the top left
    var boxes = { hover: null, selected: null };
    var pending = false, opened = false, listeners = [];

    function size() { return { w: element.clientWidth, h: element.clientHeight }; }
    function fitScale() { var e = size(); return Math.min(e.w / W, e.h / H); }

    function levelScale(level) { return Math.pow(2, level - maxLevel); }

    function tile(level, x, y) {
      var key = level + "/" + x + "_" + y;
      var img = tiles[key];
      if (!img) {
        img = new Image();
        img.onload = img.onerror = function () { img.settled = true; schedule(); };
        img.src = source.url + key + "." + source.ext;
        tiles[key] = img;
      }
      return img;
    }

    /** Level, and the tile range of it that covers the visible part of the mosaic. */
    function visible(level) {
      var e = size(), f = levelScale(level), span = T / f;  // mosaic px per tile
      var x0 = Math.max(0, view.ox), y0 = Math.max(0, view.oy);
      var x1 = Math.min(W, view.ox + e.w / view.s), y1 = Math.min(H, view.oy + e.h / view.s);
      return { level: level, f: f, span: span, tx0: Math.floor(x0 / span),
        ty0: Math.floor(y0 / span), tx1: Math.ceil(x1 / span) - 1, ty1: Math.ceil(y1 / span) - 1 };
    }

    function targetLevel() {
      var ratio = view.s * (window.devicePixelRatio || 1);
      return Math.max(baseLevel, Math.min(maxLevel,
        maxLevel + Math.ceil(Math.log(ratio) / Math.LN2 - 1e-9)));
    }

    function drawLevel(level, request) {
      var v = visible(level), all = true;
      for (var ty = v.ty0; ty <= v.ty1; ty++) {
        for (var tx = v.tx0; tx <= v.tx1; tx++) {
          var img = request ? tile(level, tx, ty) : tiles[level + "/" + tx + "_" + ty];
          if (!img || !img.complete || !img.naturalWidth) {
            all = all && !!img && !!img.settled;
            continue;
          }
          ctx.drawImage(img, (tx * v.span - view.ox) * view.s, (ty * v.span - view.oy) * view.s,
            img.naturalWidth / v.f * view.s, img.naturalHeight / v.f * view.s);
        }
      }
      return all;
    }

    function drawBox(cell, color, width) {
      if (!cell) { return; }
      var c = source.cell;
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.strokeRect((cell.col * c - view.ox) * view.s, (cell.row * c - view.oy) * view.s,
        c * view.s, c * view.s);
    }

    function draw() {
      pending = false;
      var e = size(), dpr = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(e.w * dpr) || canvas.height !== Math.round(e.h * dpr)) {
        canvas.width = Math.round(e.w * dpr);
        canvas.height = Math.round(e.h * dpr);
        canvas.style.width = e.w + "px";
        canvas.style.height = e.h + "px";
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = BACKGROUND;
      ctx.fillRect(0, 0, e.w, e.h);
      ctx.imageSmoothingQuality = "high";
      var target = targetLevel();
      // Coarse tiles first, so the finer ones that have not arrived yet leave no holes.
      var done = drawLevel(baseLevel, true);
      if (target > baseLevel) {
        for (var level = baseLevel + 1; level < target; level++) { drawLevel(level, false); }
        done = drawLevel(target, true);
      }
      drawBox(boxes.hover, "rgba(255, 255, 255, .75)", 2);
      drawBox(boxes.selected, "#ffd479", 3);
      if (done && !opened) {
        opened = true;
        listeners.forEach(function (fn) { fn(); });
      }
    }

    function schedule() {
      if (!pending) { pending = true; window.requestAnimationFrame(draw); }
    }

    /** Keep the view's centre over the mosaic. */
    function constrain() {
      var e = size();
      var cx = Math.min(W, Math.max(0, view.ox + e.w / 2 / view.s));
      var cy = Math.min(H, Math.max(0, view.oy + e.h / 2 / view.s));
      view.ox = cx - e.w / 2 / view.s;
      view.oy = cy - e.h / 2 / view.s;
    }

    function zoomAt(point, factor) {
      var s = Math.min(MAX_PIXEL_RATIO, Math.max(fitScale() * MIN_ZOOM, view.s * factor));
      var mx = view.ox + point.x / view.s, my = view.oy + point.y / view.s;
      view.s = s;
      view.ox = mx - point.x / s;
      view.oy = my - point.y / s;
      constrain();
      schedule();
    }

    /** Show the mosaic rectangle (x, y, w, h), centred, as large as it fits. */
    function fitBounds(x, y, w, h) {
      var e = size();
      view.s = Math.min(MAX_PIXEL_RATIO, Math.min(e.w / w, e.h / h));
      view.ox = x + w / 2 - e.w / 2 / view.s;
      view.oy = y + h / 2 - e.h / 2 / view.s;
      constrain();
      schedule();
    }

    function home() { fitBounds(0, 0, W, H); }

    function local(e) {
      var r = canvas.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    }

    var press = null;     // the first pointer down: a click, or a drag that pans
    var pointers = {};    // pointer id -> its last position; two of them pinch to zoom
    function pinch() {
      var ids = Object.keys(pointers);
      if (ids.length !== 2) { return null; }
      var a = pointers[ids[0]], b = pointers[ids[1]];
      return { d: Math.hypot(a.x - b.x, a.y - b.y), x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    }
    canvas.addEventListener("pointerdown", function (e) {
      pointers[e.pointerId] = local(e);
      if (!press) { press = { start: local(e), last: local(e), drag: false }; }
      else { press.drag = true; }  // a second finger: never a click
      try { canvas.setPointerCapture(e.pointerId); } catch (err) { /* already gone */ }
    });
    canvas.addEventListener("pointermove", function (e) {
      var p = local(e);
      if (!press) { on.hover(p); return; }
      var before = pinch();
      pointers[e.pointerId] = p;
      var after = pinch();
      if (before && after) {
        if (before.d > 0) { zoomAt(after, after.d / before.d); }
        return;
      }
      if (Math.abs(p.x - press.start.x) + Math.abs(p.y - press.start.y) > DRAG_PX) {
        press.drag = true;
      }
      if (press.drag) {
        view.ox -= (p.x - press.last.x) / view.s;
        view.oy -= (p.y - press.last.y) / view.s;
        constrain();
        schedule();
      }
      press.last = p;
    });
    function release(e) {
      delete pointers[e.pointerId];
      if (Object.keys(pointers).length === 0) { press = null; }
      else if (press) { press.last = pointers[Object.keys(pointers)[0]]; }
    }
    canvas.addEventListener("pointerup", function (e) {
      if (press && !press.drag && Object.keys(pointers).length === 1) { on.click(local(e)); }
      release(e);
    });
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("pointerleave", function () { if (!press) { on.hover(null); } });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      zoomAt(local(e), Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.002)));
    }, { passive: false });
    canvas.addEventListener("dblclick", function (e) { zoomAt(local(e), 2); });

    var controls = document.createElement("div");
    controls.className = "fallback-controls";
    [["+", "Zoom in", function () { zoomAt(centre(), 1.6); }],
     ["−", "Zoom out", function () { zoomAt(centre(), 1 / 1.6); }],
     ["⌂", "Show the whole mosaic", home]].forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b[0];
      button.title = b[1];
      button.setAttribute("aria-label", b[1]);
      button.addEventListener("click", b[2]);
      controls.appendChild(button);
    });
    element.appendChild(controls);

    function centre() { var e = size(); return { x: e.w / 2, y: e.h / 2 }; }

    var lastSize = size();
    window.addEventListener("resize", function () {
      // Keep the same centre and zoom relative to the fit.
      var e = size(), c = { x: view.ox + lastSize.w / 2 / view.s, y: view.oy + lastSize.h / 2 / view.s };
      lastSize = e;
      view.ox = c.x - e.w / 2 / view.s;
      view.oy = c.y - e.h / 2 / view.s;
      schedule();
    });

    home();

    return {
      /** Mosaic pixel coordinates of a point in element coordinates. */
      elementToImage: function (p) { return { x: view.ox + p.x / view.s, y: view.oy + p.y / view.s }; },
      /** Element coordinates of a point in mosaic pixels. */
      imageToElement: function (p) { return { x: (p.x - view.ox) * view.s, y: (p.y - view.oy) * view.s }; },
      fitBounds: fitBounds,
      home: home,
      zoomAt: zoomAt,
      setBoxes: function (hover, selected) { boxes.hover = hover; boxes.selected = selected; schedule(); },
      /** True once every tile the current view needs has arrived (or failed). */
      fullyLoaded: function () {
        var v = visible(targetLevel());
        for (var ty = v.ty0; ty <= v.ty1; ty++) {
          for (var tx = v.tx0; tx <= v.tx1; tx++) {
            var img = tiles[v.level + "/" + tx + "_" + ty];
            if (!img || !img.settled) { return false; }
          }
        }
        return true;
      },
      onOpen: function (fn) { if (opened) { fn(); } else { listeners.push(fn); } },
      element: element,
      canvas: canvas,
      view: view
    };
  }

  window.GridtsneFallbackViewer = FallbackViewer;
})();
