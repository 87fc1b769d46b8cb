// The guild's service area drawn offline, for the report page and the live map.
//
// No tiles and no CDN: an SVG in kilometres (an equirectangular projection around the
// area's middle latitude, which is within 0.1 % over 60 km), with a few hand-traced rivers,
// roads and place names for orientation only. Zoom with the buttons, the wheel or two
// fingers; drag to pan; a tap (without dragging) calls `onTap({lat, lon})`.
//
// Markers keep their size on screen whatever the zoom: `place(el, lat, lon)` positions an
// element and scales it by the current km-per-pixel, and every zoom or pan re-places them.

const SVG_NS = "http://www.w3.org/2000/svg";
const KM_PER_DEG_LAT = 110.574;
const KM_PER_DEG_LON_AT_EQUATOR = 111.32;
const MAX_ZOOM = 24;
const TAP_SLOP_PX = 8;

// [lat, lon] points, traced by hand: close enough to find your way, not to navigate.
const RIVERS = [
  [[-33.345, -70.5], [-33.352, -70.518], [-33.375, -70.545], [-33.395, -70.575], [-33.411, -70.597],
    [-33.425, -70.62], [-33.433, -70.639], [-33.432, -70.652], [-33.428, -70.667], [-33.425, -70.69],
    [-33.432, -70.72], [-33.445, -70.755], [-33.468, -70.8], [-33.5, -70.85], [-33.53, -70.89],
    [-33.565, -70.95]],
  [[-33.6, -70.4], [-33.6, -70.48], [-33.612, -70.53], [-33.625, -70.57], [-33.65, -70.63],
    [-33.675, -70.68], [-33.695, -70.75], [-33.71, -70.82], [-33.725, -70.9], [-33.735, -70.95]],
];
const ROADS = [
  { name: "Ruta 5", major: true, points: [[-33.15, -70.745], [-33.25, -70.72], [-33.33, -70.7],
    [-33.39, -70.675], [-33.425, -70.662], [-33.455, -70.658], [-33.5, -70.665], [-33.56, -70.685],
    [-33.62, -70.705], [-33.68, -70.72], [-33.75, -70.74]] },
  { name: "Américo Vespucio", major: true, closed: true, points: [[-33.372, -70.66], [-33.385, -70.62],
    [-33.4, -70.59], [-33.43, -70.582], [-33.46, -70.584], [-33.49, -70.586], [-33.52, -70.594],
    [-33.543, -70.62], [-33.552, -70.66], [-33.54, -70.7], [-33.515, -70.73], [-33.475, -70.745],
    [-33.43, -70.745], [-33.395, -70.73], [-33.378, -70.7]] },
  { name: "Alameda", points: [[-33.458, -70.72], [-33.452, -70.685], [-33.445, -70.66],
    [-33.437, -70.635], [-33.425, -70.614], [-33.418, -70.6], [-33.412, -70.575], [-33.405, -70.55],
    [-33.398, -70.525]] },
  { name: "Ruta 68", points: [[-33.448, -70.7], [-33.443, -70.745], [-33.44, -70.79], [-33.43, -70.86],
    [-33.42, -70.95]] },
  { name: "Autopista del Sol", points: [[-33.462, -70.705], [-33.485, -70.75], [-33.52, -70.82],
    [-33.57, -70.9], [-33.6, -70.95]] },
  { name: "Vicuña Mackenna", minor: true, points: [[-33.437, -70.634], [-33.457, -70.627],
    [-33.487, -70.611], [-33.52, -70.598], [-33.56, -70.585], [-33.6, -70.577]] },
  { name: "Independencia", minor: true, points: [[-33.432, -70.655], [-33.4, -70.66], [-33.37, -70.665]] },
  { name: "Recoleta", minor: true, points: [[-33.431, -70.645], [-33.405, -70.643], [-33.38, -70.642]] },
  { name: "Irarrázaval", minor: true, points: [[-33.453, -70.628], [-33.454, -70.6], [-33.456, -70.57]] },
  { name: "Pajaritos", minor: true, points: [[-33.456, -70.713], [-33.478, -70.735], [-33.508, -70.758]] },
  { name: "Departamental", minor: true, points: [[-33.514, -70.7], [-33.511, -70.65], [-33.508, -70.6],
    [-33.507, -70.575]] },
];
// The foothills of the Andes, east of the city.
const FOOTHILLS = [[-33.15, -70.53], [-33.3, -70.535], [-33.36, -70.5], [-33.42, -70.535],
  [-33.47, -70.54], [-33.53, -70.55], [-33.58, -70.555], [-33.62, -70.54], [-33.75, -70.55]];
// Place names: `zoom` is the zoom from which the label shows.
const PLACES = [
  { name: "Santiago", lat: -33.447, lon: -70.655, zoom: 1, kind: "city" },
  { name: "Maipú", lat: -33.51, lon: -70.757, zoom: 1 },
  { name: "Puente Alto", lat: -33.611, lon: -70.575, zoom: 1 },
  { name: "Quilicura", lat: -33.36, lon: -70.73, zoom: 1 },
  { name: "Las Condes", lat: -33.41, lon: -70.565, zoom: 1 },
  { name: "La Florida", lat: -33.522, lon: -70.598, zoom: 1 },
  { name: "San Bernardo", lat: -33.593, lon: -70.7, zoom: 1 },
  { name: "Colina", lat: -33.2, lon: -70.675, zoom: 1 },
  { name: "Lampa", lat: -33.285, lon: -70.875, zoom: 1 },
  { name: "Peñaflor", lat: -33.606, lon: -70.877, zoom: 1 },
  { name: "Lo Barnechea", lat: -33.35, lon: -70.52, zoom: 1.5 },
  { name: "Pudahuel", lat: -33.44, lon: -70.81, zoom: 1.5 },
  { name: "Providencia", lat: -33.43, lon: -70.61, zoom: 2.5 },
  { name: "Ñuñoa", lat: -33.456, lon: -70.597, zoom: 2.5 },
  { name: "Recoleta", lat: -33.405, lon: -70.642, zoom: 2.5 },
  { name: "Estación Central", lat: -33.462, lon: -70.7, zoom: 2.5 },
  { name: "La Cisterna", lat: -33.53, lon: -70.665, zoom: 2.5 },
  { name: "Peñalolén", lat: -33.485, lon: -70.545, zoom: 2.5 },
  { name: "Vitacura", lat: -33.385, lon: -70.58, zoom: 2.5 },
  { name: "Renca", lat: -33.405, lon: -70.725, zoom: 2.5 },
  { name: "Aeropuerto", lat: -33.393, lon: -70.786, zoom: 1.5, kind: "landmark" },
  { name: "Plaza de Armas", lat: -33.4378, lon: -70.6504, zoom: 4, kind: "landmark" },
  { name: "Cerro San Cristóbal", lat: -33.4253, lon: -70.6335, zoom: 4, kind: "landmark" },
  { name: "Estadio Nacional", lat: -33.4645, lon: -70.6106, zoom: 4, kind: "landmark" },
  { name: "Costanera Center", lat: -33.4175, lon: -70.6065, zoom: 5, kind: "landmark" },
];
const SCALES_KM = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20];

/** Create an SVG element with attributes, appended to `parent` when given. */
export function svgEl(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (parent) parent.appendChild(el);
  return el;
}

/** An HTML element with a class and text (text is always text: reports come from the public). */
export function htmlEl(tag, className = "", text = "") {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text) el.textContent = text;
  return el;
}

export class ServiceMap {
  /** `host` is an empty element sized by CSS; `area` is {lat_min, lat_max, lon_min, lon_max}. */
  constructor(host, area, { onTap = null, label = "Mapa del área de servicio" } = {}) {
    this.host = host;
    this.area = area;
    this.onTap = onTap;
    const midLat = ((area.lat_min + area.lat_max) / 2) * (Math.PI / 180);
    this.kx = KM_PER_DEG_LON_AT_EQUATOR * Math.cos(midLat);
    this.width = (area.lon_max - area.lon_min) * this.kx;
    this.height = (area.lat_max - area.lat_min) * KM_PER_DEG_LAT;
    this.zoom = 1;
    this.center = { x: this.width / 2, y: this.height / 2 };
    host.classList.add("service-map");
    this.svg = svgEl("svg", { role: "img", "aria-label": label, class: "map-svg" }, host);
    this.base = svgEl("g", { class: "base" }, this.svg);
    this.labels = svgEl("g", { class: "labels" }, this.svg);
    this.overlays = svgEl("g", { class: "overlays" }, this.svg);
    this._drawBase();
    this._controls();
    this._gestures();
    new ResizeObserver(() => this._apply()).observe(host);
    this._apply();
  }

  // --- projection ------------------------------------------------------------------------

  project(lat, lon) {
    return { x: (lon - this.area.lon_min) * this.kx, y: (this.area.lat_max - lat) * KM_PER_DEG_LAT };
  }

  unproject(x, y) {
    return { lat: this.area.lat_max - y / KM_PER_DEG_LAT, lon: this.area.lon_min + x / this.kx };
  }

  inArea(lat, lon) {
    const a = this.area;
    return lat >= a.lat_min && lat <= a.lat_max && lon >= a.lon_min && lon <= a.lon_max;
  }

  /** Kilometres per CSS pixel at the current zoom. */
  kmPerPx() {
    const ctm = this.svg.getScreenCTM();
    return ctm && ctm.a ? 1 / ctm.a : this.width / Math.max(1, this.host.clientWidth);
  }

  // --- overlays ---------------------------------------------------------------------------

  /** A new group drawn above the base map (later layers above earlier ones). */
  layer(className = "") {
    return svgEl("g", { class: className }, this.overlays);
  }

  /** Put `el` at (lat, lon), kept the same size on screen; positions outside the area sit on its edge. */
  place(el, lat, lon) {
    el.dataset.lat = lat;
    el.dataset.lon = lon;
    el.classList.add("pin");
    el.classList.toggle("outside", !this.inArea(lat, lon));
    this._placeOne(el, this.kmPerPx());
  }

  /** Centre the view on a point, zoomed in to at least `zoom`. */
  focus(lat, lon, zoom = 6) {
    this.zoom = Math.max(this.zoom, Math.min(zoom, MAX_ZOOM));
    this.center = this.project(lat, lon);
    this._apply();
  }

  /** Show every point of `points` ({lat, lon}) inside the area, zoomed in no further than `maxZoom`. */
  fit(points, maxZoom = 6) {
    const inside = points.filter((p) => this.inArea(p.lat, p.lon)).map((p) => this.project(p.lat, p.lon));
    if (!inside.length) return;
    const pad = 2; // km around the outermost points
    const xs = inside.map((p) => p.x);
    const ys = inside.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs) - pad, Math.max(...xs) + pad, Math.min(...ys) - pad, Math.max(...ys) + pad];
    const { w, h, fit } = this._frame();
    this.zoom = clamp(Math.min((w * fit) / (x1 - x0), (h * fit) / (y1 - y0)), 1, maxZoom);
    this.center = { x: (x0 + x1) / 2, y: (y0 + y1) / 2 };
    this._apply();
  }

  reset() {
    this.zoom = 1;
    this.center = { x: this.width / 2, y: this.height / 2 };
    this._apply();
  }

  // --- the view ---------------------------------------------------------------------------

  /** The host's size in pixels, and the km per pixel at which the whole area fits (zoom 1). */
  _frame() {
    const w = Math.max(1, this.host.clientWidth);
    const h = Math.max(1, this.host.clientHeight);
    return { w, h, fit: Math.max(this.width / w, this.height / h) * 1.04 };
  }

  _apply() {
    // The whole area fits at zoom 1; the view keeps the host's shape, so nothing is letterboxed.
    const { w, h, fit } = this._frame();
    const viewW = (w * fit) / this.zoom;
    const viewH = (h * fit) / this.zoom;
    this.center.x = clamp(this.center.x, 0, this.width);
    this.center.y = clamp(this.center.y, 0, this.height);
    if (this.zoom <= 1) this.center = { x: this.width / 2, y: this.height / 2 };
    const x = this.center.x - viewW / 2;
    const y = this.center.y - viewH / 2;
    this.svg.setAttribute("viewBox", `${x} ${y} ${viewW} ${viewH}`);
    const perPx = viewW / w;
    for (const el of this.svg.querySelectorAll(".pin")) this._placeOne(el, perPx);
    for (const el of this.labels.children) {
      el.setAttribute("visibility", this.zoom >= Number(el.dataset.zoom) ? "visible" : "hidden");
    }
    this._scaleBar(perPx);
    this.host.dispatchEvent(new CustomEvent("mapview", { detail: { zoom: this.zoom } }));
  }

  _placeOne(el, perPx) {
    const a = this.area;
    const lat = clamp(Number(el.dataset.lat), a.lat_min, a.lat_max);
    const lon = clamp(Number(el.dataset.lon), a.lon_min, a.lon_max);
    const p = this.project(lat, lon);
    el.setAttribute("transform", `translate(${p.x} ${p.y}) scale(${perPx})`);
  }

  _zoomAt(factor, clientX, clientY) {
    const zoom = clamp(this.zoom * factor, 1, MAX_ZOOM);
    if (zoom === this.zoom) return;
    // Keep the point under the finger (or cursor) where it is.
    const before = this._toMap(clientX, clientY);
    const ratio = this.zoom / zoom;
    this.center = {
      x: before.x + (this.center.x - before.x) * ratio,
      y: before.y + (this.center.y - before.y) * ratio,
    };
    this.zoom = zoom;
    this._apply();
  }

  _panPx(dx, dy) {
    const perPx = this.kmPerPx();
    this.center = { x: this.center.x - dx * perPx, y: this.center.y - dy * perPx };
    this._apply();
  }

  _toMap(clientX, clientY) {
    const point = this.svg.createSVGPoint();
    point.x = clientX;
    point.y = clientY;
    return point.matrixTransform(this.svg.getScreenCTM().inverse());
  }

  // --- drawing ----------------------------------------------------------------------------

  _line(points) {
    return points
      .map(([lat, lon], i) => {
        const p = this.project(lat, lon);
        return `${i ? "L" : "M"}${p.x.toFixed(2)} ${p.y.toFixed(2)}`;
      })
      .join(" ");
  }

  _drawBase() {
    const b = this.base;
    svgEl("rect", { x: -500, y: -500, width: 1000 + this.width, height: 1000 + this.height, class: "outside" }, b);
    svgEl("rect", { x: 0, y: 0, width: this.width, height: this.height, class: "land" }, b);
    const hills = [...FOOTHILLS, [this.area.lat_min, this.area.lon_max], [this.area.lat_max, this.area.lon_max]];
    svgEl("path", { d: `${this._line(hills)} Z`, class: "hills" }, b);
    const urban = this.project(-33.447, -70.645);
    svgEl("ellipse", { cx: urban.x, cy: urban.y, rx: 13.5, ry: 15.5, class: "urban" }, b);
    for (const river of RIVERS) svgEl("path", { d: this._line(river), class: "river" }, b);
    for (const road of ROADS) {
      const d = this._line(road.points) + (road.closed ? " Z" : "");
      const kind = road.major ? "road major" : road.minor ? "road minor" : "road";
      svgEl("path", { d, class: `${kind} casing` }, b);
      svgEl("path", { d, class: kind }, b).appendChild(svgEl("title")).append(road.name);
    }
    svgEl("rect", { x: 0, y: 0, width: this.width, height: this.height, class: "edge" }, b);
    this._label("Precordillera", -33.5, -70.47, 1, "hills-label");
    for (const place of PLACES) this._label(place.name, place.lat, place.lon, place.zoom, place.kind || "town");
  }

  _label(name, lat, lon, zoom, kind) {
    const g = svgEl("g", { class: `place ${kind}` }, this.labels);
    g.dataset.zoom = zoom;
    if (kind === "landmark") svgEl("circle", { r: 2.5, cy: 0 }, g);
    svgEl("text", { y: kind === "landmark" ? -5 : 4 }, g).textContent = name;
    this.place(g, lat, lon);
    return g;
  }

  _controls() {
    const box = htmlEl("div", "map-controls");
    const button = (text, title, action) => {
      const b = htmlEl("button", "map-button", text);
      b.type = "button";
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", (event) => {
        event.stopPropagation();
        action();
      });
      box.appendChild(b);
      return b;
    };
    const middle = () => {
      const r = this.svg.getBoundingClientRect();
      return [r.left + r.width / 2, r.top + r.height / 2];
    };
    button("+", "Acercar", () => this._zoomAt(2, ...middle()));
    button("−", "Alejar", () => this._zoomAt(0.5, ...middle()));
    button("⤢", "Ver toda el área", () => this.reset());
    this.host.appendChild(box);
    this.scale = htmlEl("div", "map-scale");
    this.scale.append(htmlEl("span", "map-scale-bar"), htmlEl("span", "map-scale-text"));
    this.host.appendChild(this.scale);
    this.host.appendChild(htmlEl("div", "map-credit", "Esquema sin conexión"));
  }

  _scaleBar(perPx) {
    const km = SCALES_KM.reduce((best, s) => (s / perPx <= 90 ? s : best), SCALES_KM[0]);
    this.scale.firstChild.style.width = `${Math.round(km / perPx)}px`;
    this.scale.lastChild.textContent = km < 1 ? `${km * 1000} m` : `${km} km`;
  }

  _gestures() {
    const pointers = new Map();
    let gesture = null;
    const svg = this.svg;
    svg.addEventListener("pointerdown", (e) => {
      if (e.button > 0) return;
      svg.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (pointers.size === 1) gesture = { x: e.clientX, y: e.clientY, moved: false, multi: false };
      else if (gesture) gesture.multi = true;
    });
    svg.addEventListener("pointermove", (e) => {
      const last = pointers.get(e.pointerId);
      if (!last || !gesture) return;
      if (pointers.size === 1) {
        if (!gesture.moved && Math.hypot(e.clientX - gesture.x, e.clientY - gesture.y) < TAP_SLOP_PX) return;
        gesture.moved = true;
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        this._panPx(e.clientX - last.x, e.clientY - last.y);
        return;
      }
      const [a, b] = [...pointers.values()];
      const other = a === last ? b : a;
      const before = Math.hypot(last.x - other.x, last.y - other.y);
      const after = Math.hypot(e.clientX - other.x, e.clientY - other.y);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (before > 0) this._zoomAt(after / before, (e.clientX + other.x) / 2, (e.clientY + other.y) / 2);
    });
    const end = (e) => {
      if (!pointers.delete(e.pointerId)) return;
      if (pointers.size > 0 || !gesture) return;
      const tapped = e.type === "pointerup" && !gesture.moved && !gesture.multi;
      gesture = null;
      if (tapped && this.onTap) {
        const p = this._toMap(e.clientX, e.clientY);
        if (p.x >= 0 && p.x <= this.width && p.y >= 0 && p.y <= this.height) this.onTap(this.unproject(p.x, p.y));
      }
    };
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", end);
    svg.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this._zoomAt(Math.exp(-e.deltaY * 0.002), e.clientX, e.clientY);
      },
      { passive: false },
    );
  }
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

/** "hace 5 s", "hace 3 min", "hace 2 h". */
export function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `hace ${s} s`;
  if (s < 3600) return `hace ${Math.floor(s / 60)} min`;
  return `hace ${Math.floor(s / 3600)} h`;
}
