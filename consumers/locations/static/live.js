// The live map: polls /v1/live every few seconds and draws carts (plate and seconds since
// seen), fugitive reports and recent alerts on the offline map of the service area.
// A cart that the service no longer lists (silent past the TTL) disappears; between polls
// the seconds keep counting here, and a cart past the TTL goes at once.

import { ServiceMap, ago, htmlEl, svgEl } from "../assets/santiago.js";

const config = JSON.parse(document.getElementById("page-config").textContent);
const $ = (id) => document.getElementById(id);
const map = new ServiceMap($("map"), config.area, { label: "Mapa en vivo de los carritos del gremio" });
const alertLayer = map.layer("alerts");
const reportLayer = map.layer("reports");
const cartLayer = map.layer("carts");
const REFRESH_MS = config.refresh_seconds * 1000;
const FADE_AFTER_S = Math.min(30, config.ttl_seconds / 2);

const ALERT_KINDS = {
  jump: ["Salto imposible", (a) => `${a.plate} se movió demasiado rápido para ir a pie.`],
  out_of_area: ["Fuera del área", (a) => `${a.plate} está fuera del área de servicio.`],
  unregistered_cart: ["Carrito no registrado", (a) => `${a.plate} no es la patente de ningún socio.`],
  fugitive_report: [
    "Reporte fugitivo",
    (a) =>
      a.plate
        ? `El carrito del gremio ${a.plate} está a menos de ${config.match_radius_m} m.`
        : `Ningún carrito del gremio a menos de ${config.match_radius_m} m.`,
  ],
  // Raised by Airflow: no cart and no place, so they are listed, never drawn on the map.
  premium_pending: [
    "Solicitud premium en espera",
    (a) => {
      const waited = /pending for (\d+) s/.exec(a.detail);
      return waited
        ? `Una solicitud premium lleva ${waited[1]} s sin decidirse.`
        : "Una solicitud premium lleva más de un minuto sin decidirse.";
    },
  ],
  report_late: [
    "Informe atrasado",
    (a) => {
      const day = /\d{4}-\d{2}-\d{2}/.exec(a.detail);
      return day
        ? `El informe de ventas del ${day[0].split("-").reverse().join("-")} no estaba listo a la hora.`
        : "Un informe de ventas diario no estaba listo a la hora.";
    },
  ],
  // The monitor's (Alertmanager's rules, deploy/prometheus/rules.yml): shown as written.
  ops: ["Alerta de operaciones", (a) => a.detail],
};

const RINGED = new Set(["jump", "out_of_area"]);

const state = { carts: [], reports: [], alerts: [], fetchedAt: 0, serverOffsetMs: 0, fitted: false };

// --- polling ------------------------------------------------------------------------------

async function poll() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), Math.max(REFRESH_MS * 2, 5000));
  try {
    const response = await fetch(config.live_url, { cache: "no-store", signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const live = await response.json();
    const serverDate = Date.parse(response.headers.get("Date") || "");
    state.serverOffsetMs = Number.isNaN(serverDate) ? 0 : serverDate - Date.now();
    state.fetchedAt = performance.now();
    Object.assign(state, { carts: live.carts, reports: live.reports, alerts: live.alerts });
    render();
    setStatus("live", "En vivo", `Actualizado a las ${new Date().toLocaleTimeString("es-CL", { hour12: false })}`);
  } catch {
    setStatus("offline", "Sin conexión", "No hay respuesta del servicio de ubicaciones; reintentando.");
  } finally {
    clearTimeout(timer);
    setTimeout(poll, REFRESH_MS);
  }
}

function setStatus(kind, text, title) {
  const pill = $("live-status");
  pill.className = `live-status ${kind}`;
  pill.title = title;
  pill.querySelector(".text").textContent = text;
  document.body.classList.toggle("stale", kind === "offline");
}

/** Seconds since the server said `iso`, by the server's clock. */
function secondsSince(iso) {
  return (Date.now() + state.serverOffsetMs - Date.parse(iso)) / 1000;
}

/** A cart's seconds since seen: the server's figure plus the time since we asked. */
function cartAge(cart) {
  return cart.seconds_since_seen + (performance.now() - state.fetchedAt) / 1000;
}

// --- drawing ------------------------------------------------------------------------------

function render() {
  const carts = state.carts.filter((cart) => cartAge(cart) <= config.ttl_seconds);
  drawCarts(carts);
  drawReports(state.reports);
  drawAlerts(state.alerts);
  listCarts(carts);
  listReports(state.reports);
  listAlerts(state.alerts);
  $("count-carts").textContent = carts.length;
  $("count-reports").textContent = state.reports.length;
  $("count-alerts").textContent = state.alerts.length;
  if (!state.fitted && (carts.length || state.reports.length)) {
    state.fitted = true;
    map.fit([...carts, ...state.reports]);
  }
  declutter();
}

/** Keep the children of `layer` keyed by `key`: reuse, create with `make`, drop the rest. */
function sync(layer, items, key, make, update) {
  const existing = new Map([...layer.children].map((el) => [el.dataset.key, el]));
  let previous = null;
  for (const item of items) {
    const id = key(item);
    let el = existing.get(id);
    existing.delete(id);
    if (!el) {
      el = make(item);
      el.dataset.key = id;
    }
    const next = previous ? previous.nextSibling : layer.firstChild;
    if (el !== next) layer.insertBefore(el, next);
    update(el, item);
    previous = el;
  }
  for (const el of existing.values()) el.remove();
}

function drawCarts(carts) {
  sync(
    cartLayer,
    carts,
    (cart) => cart.plate,
    (cart) => {
      const g = svgEl("g", { class: "marker-cart" });
      g.dataset.plate = cart.plate;
      svgEl("title", {}, g);
      svgEl("circle", { r: 7 }, g);
      const label = svgEl("g", { class: "marker-label" }, g);
      svgEl("rect", { x: 11, y: -10, rx: 5, height: 20 }, label);
      const text = svgEl("text", { x: 17, y: 0.5 }, label);
      svgEl("tspan", { class: "plate" }, text).textContent = cart.plate;
      svgEl("tspan", { class: "age", dx: 5 }, text);
      return g;
    },
    (g, cart) => {
      g.classList.toggle("registered", cart.registered);
      g.classList.toggle("unregistered", !cart.registered);
      map.place(g, cart.lat, cart.lon);
      g.cart = cart;
      updateAge(g);
    },
  );
}

function updateAge(g) {
  const seconds = cartAge(g.cart);
  const age = g.querySelector(".age");
  const text = `${Math.floor(seconds)} s`;
  if (age.textContent !== text) {
    age.textContent = text;
    const width = g.querySelector("text").getComputedTextLength();
    g.querySelector("rect").setAttribute("width", Math.ceil(width) + 12);
  }
  g.classList.toggle("fading", seconds > FADE_AFTER_S);
  const who = g.cart.registered ? g.cart.master || "socio del gremio" : "no registrado";
  g.querySelector("title").textContent = `${g.cart.plate} (${who}), ${ago(seconds)}`;
}

function drawReports(reports) {
  sync(
    reportLayer,
    reports,
    (report) => report.id,
    (report) => {
      const g = svgEl("g", { class: "marker-report" });
      g.dataset.reportId = report.id;
      svgEl("title", {}, g);
      svgEl("path", { d: "M0 0 C-2.5 -6 -9 -10 -9 -17 A9 9 0 1 1 9 -17 C9 -10 2.5 -6 0 0 Z" }, g);
      svgEl("circle", { cy: -17, r: 3.5 }, g);
      return g;
    },
    (g, report) => {
      map.place(g, report.lat, report.lon);
      g.querySelector("title").textContent = report.description || "Reporte sin descripción";
    },
  );
}

function drawAlerts(alerts) {
  // Fugitive-report alerts sit on their report's pin already.
  // Rings mark where a cart jumped or left the area; the other kinds are on the markers already
  // (an orange cart is unregistered, a red pin is a report).
  const placed = alerts.filter((a) => a.lat !== null && a.lon !== null && RINGED.has(a.kind));
  sync(
    alertLayer,
    placed,
    (alert) => alert.id,
    (alert) => {
      const g = svgEl("g", { class: "marker-alert" });
      g.dataset.alertId = alert.id;
      svgEl("circle", { r: 12 }, g);
      return g;
    },
    (g, alert) => map.place(g, alert.lat, alert.lon),
  );
}

/** Labels that would overlap an earlier one flip to the left, or hide (the dot and the list stay). */
function declutter() {
  const taken = [];
  const box = map.svg.getBoundingClientRect();
  const markers = [...cartLayer.children].sort((a, b) => a.dataset.plate.localeCompare(b.dataset.plate));
  for (const g of markers) {
    const dot = g.querySelector("circle").getBoundingClientRect();
    const x = dot.left + dot.width / 2 - box.left;
    const y = dot.top + dot.height / 2 - box.top;
    const width = Number(g.querySelector("rect").getAttribute("width")) || 80;
    const right = { l: x + 11, r: x + 11 + width, t: y - 10, b: y + 10 };
    const left = { l: x - 11 - width, r: x - 11, t: y - 10, b: y + 10 };
    const free = (c) => c.l >= 0 && c.r <= box.width && !taken.some((o) => c.l < o.r && o.l < c.r && c.t < o.b && o.t < c.b);
    const label = g.querySelector(".marker-label");
    const side = free(right) ? right : free(left) ? left : null;
    label.setAttribute("visibility", side ? "visible" : "hidden");
    label.setAttribute("transform", side === left ? `translate(${-22 - width} 0)` : "");
    if (side) taken.push(side);
  }
}
$("map").addEventListener("mapview", () => requestAnimationFrame(declutter));

// --- lists --------------------------------------------------------------------------------

function listInto(listId, emptyId, items, key, fill) {
  const list = $(listId);
  $(emptyId).hidden = items.length > 0;
  sync(list, items, key, () => htmlEl("li"), fill);
}

function focusOn(li, lat, lon) {
  li.tabIndex = 0;
  li.onclick = () => {
    map.focus(lat, lon, 8);
    $("map").scrollIntoView({ behavior: "smooth", block: "center" });
  };
  li.onkeydown = (e) => e.key === "Enter" && li.onclick();
}

function listCarts(carts) {
  listInto("cart-list", "cart-empty", carts, (c) => c.plate, (li, cart) => {
    li.dataset.plate = cart.plate;
    li.className = cart.registered ? "registered" : "unregistered";
    const who = cart.registered ? cart.master || "Socio del gremio" : "No registrado";
    li.replaceChildren(
      htmlEl("span", "plate", cart.plate),
      htmlEl("span", "who", who),
      htmlEl("span", "when", `${ago(cartAge(cart))}${speedText(cart)}`),
    );
    li.cart = cart;
    focusOn(li, cart.lat, cart.lon);
  });
}

function listReports(reports) {
  listInto("report-list", "report-empty", reports, (r) => r.id, (li, report) => {
    li.dataset.reportId = report.id;
    const head = htmlEl("div", "head");
    head.append(htmlEl("span", "when", ago(secondsSince(report.received_at))));
    if (report.plate) {
      const plate = htmlEl("span", "reported", "Patente ");
      plate.append(htmlEl("b", "plate", report.plate));
      head.append(plate);
    }
    const what = htmlEl("p", report.description ? "what" : "what none", report.description || "Sin descripción.");
    const near =
      report.nearest_plate === null
        ? "Ningún carrito con señal cerca."
        : `Carrito más cercano: ${report.nearest_plate} a ${formatDistance(report.nearest_distance_m)}.`;
    li.replaceChildren(head, what, htmlEl("p", "near", near));
    focusOn(li, report.lat, report.lon);
  });
}

function listAlerts(alerts) {
  listInto("alert-list", "alert-empty", alerts, (a) => a.id, (li, alert) => {
    const [title, summary] = ALERT_KINDS[alert.kind] || [alert.kind, () => alert.detail];
    li.dataset.alertId = alert.id;
    li.title = alert.detail;
    const head = htmlEl("div", "head");
    head.append(htmlEl("span", `badge ${alert.kind}`, title), htmlEl("span", "when", ago(secondsSince(alert.created_at))));
    if (alert.plate) head.append(htmlEl("span", "plate", alert.plate));
    li.replaceChildren(head, htmlEl("p", "what", summary(alert)));
    if (alert.lat !== null && alert.lon !== null) focusOn(li, alert.lat, alert.lon);
  });
}

/** The speed implied by a cart's last two positions, when it is moving. */
function speedText(cart) {
  return cart.speed_kmh >= 0.5 ? ` · ${cart.speed_kmh.toFixed(1)} km/h` : "";
}

function formatDistance(metres) {
  return metres < 1000 ? `${Math.round(metres)} m` : `${(metres / 1000).toFixed(1)} km`;
}

// --- the clock between polls ----------------------------------------------------------------

setInterval(() => {
  if (!state.fetchedAt) return;
  let expired = false;
  for (const g of cartLayer.children) {
    if (cartAge(g.cart) > config.ttl_seconds) expired = true;
    else updateAge(g);
  }
  for (const li of $("cart-list").children) {
    const when = li.querySelector(".when");
    when.textContent = `${ago(cartAge(li.cart))}${speedText(li.cart)}`;
  }
  if (expired) render();
}, 1000);

poll();
