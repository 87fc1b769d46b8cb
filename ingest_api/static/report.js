// The report page: a point (the phone's location, a tap on the map, or typed coordinates),
// an optional plate and description, POSTed as JSON to /v1/reports. The API validates;
// this page puts its answer (success, field errors, 429, outages) into plain Spanish.

import { ServiceMap, htmlEl, svgEl } from "../assets/santiago.js";

const config = JSON.parse(document.getElementById("page-config").textContent);
const $ = (id) => document.getElementById(id);
const form = $("report-form");
const fields = { lat: $("lat"), lon: $("lon"), plate: $("plate"), description: $("description") };
const status = $("status");
const submit = $("submit");
const hint = $("where-hint");
const HINT = hint.textContent;
const REQUEST_TIMEOUT_MS = 20000;

const map = new ServiceMap($("map"), config.area, {
  label: "Mapa del área de servicio: toca para marcar dónde está el carrito",
  onTap: ({ lat, lon }) => setPoint(lat, lon, "Punto marcado en el mapa."),
});
const pinLayer = map.layer("pins");
let pin = null;

// --- the point ----------------------------------------------------------------------------

function parseCoordinate(text) {
  const clean = text.trim().replace(/\u2212/g, "-").replace(",", ".");
  return clean === "" ? null : Number(clean);
}

function setPoint(lat, lon, message) {
  fields.lat.value = lat.toFixed(6);
  fields.lon.value = lon.toFixed(6);
  clearError("where", [fields.lat, fields.lon]);
  showPin(lat, lon);
  setHint(message, "ok");
}

function showPin(lat, lon) {
  if (!pin) {
    pin = svgEl("g", { class: "marker-pin" }, pinLayer);
    svgEl("circle", { class: "halo", r: 16 }, pin);
    svgEl("path", { d: "M0 0 C-3 -7 -11 -12 -11 -20 A11 11 0 1 1 11 -20 C11 -12 3 -7 0 0 Z" }, pin);
    svgEl("circle", { class: "dot", cy: -20, r: 4.5 }, pin);
  }
  map.place(pin, lat, lon);
  pin.classList.toggle("outside", !map.inArea(lat, lon));
}

function removePin() {
  pin?.remove();
  pin = null;
}

function setHint(text, kind = "") {
  hint.textContent = text;
  hint.className = `hint ${kind}`.trim();
}

function typedPoint() {
  const lat = parseCoordinate(fields.lat.value);
  const lon = parseCoordinate(fields.lon.value);
  if (lat === null || lon === null || !Number.isFinite(lat) || !Number.isFinite(lon)) {
    removePin();
    setHint(HINT);
    return;
  }
  if (Math.abs(lat) > 90 || Math.abs(lon) > 180) {
    removePin();
    setHint("Esas coordenadas no existen.", "bad");
  } else if (!map.inArea(lat, lon)) {
    showPin(lat, lon);
    setHint("Ese punto está fuera del área de servicio del gremio.", "warn");
  } else {
    showPin(lat, lon);
    setHint("Punto escrito a mano.", "ok");
  }
}
fields.lat.addEventListener("input", typedPoint);
fields.lon.addEventListener("input", typedPoint);

$("locate").addEventListener("click", () => {
  const button = $("locate");
  if (!("geolocation" in navigator) || !window.isSecureContext) {
    setHint(
      "Este navegador no entrega tu ubicación aquí (se necesita una conexión segura, https). Toca el mapa para marcar el punto.",
      "warn",
    );
    return;
  }
  button.disabled = true;
  setHint("Buscando tu ubicación…");
  navigator.geolocation.getCurrentPosition(
    (position) => {
      button.disabled = false;
      const { latitude, longitude, accuracy } = position.coords;
      const near = accuracy > 0 ? ` (± ${Math.round(accuracy)} m)` : "";
      setPoint(latitude, longitude, `Usando tu ubicación${near}.`);
      if (map.inArea(latitude, longitude)) map.focus(latitude, longitude, 8);
      else setHint("Tu ubicación está fuera del área de servicio del gremio. Igual puedes enviar el reporte.", "warn");
    },
    (error) => {
      button.disabled = false;
      const why = {
        1: "No diste permiso para usar tu ubicación.",
        2: "No pudimos saber dónde estás.",
        3: "Tu ubicación se demoró demasiado.",
      }[error.code] || "No pudimos obtener tu ubicación.";
      setHint(`${why} Toca el mapa para marcar el punto.`, "warn");
    },
    { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 },
  );
});

// --- details ------------------------------------------------------------------------------

const counter = $("description-count");
fields.description.addEventListener("input", () => {
  const used = fields.description.value.length;
  counter.firstElementChild.textContent = used;
  counter.classList.toggle("near", used > config.description_max * 0.9);
  clearError("description", [fields.description]);
});
fields.plate.addEventListener("input", () => clearError("plate", [fields.plate]));

// --- errors in plain words ----------------------------------------------------------------

const AREA_OF = { lat: "where", lon: "where", plate: "plate", description: "description" };

function clearError(area, inputs) {
  const box = $(`error-${area}`);
  box.textContent = "";
  box.hidden = true;
  for (const input of inputs) input.removeAttribute("aria-invalid");
}

function showError(field, message) {
  const area = AREA_OF[field];
  if (!area) return false;
  const box = $(`error-${area}`);
  box.textContent = box.textContent ? `${box.textContent} ${message}` : message;
  box.hidden = false;
  fields[field].setAttribute("aria-invalid", "true");
  return true;
}

/** One API field error (docs/API.md: field, code, message) in Spanish. */
function spanish({ field, code, message }) {
  if (field === "lat" || field === "lon") {
    const name = field === "lat" ? "latitud" : "longitud";
    const limit = field === "lat" ? 90 : 180;
    if (code === "missing") return `Falta la ${name}: usa tu ubicación o toca el mapa.`;
    if (code.startsWith("float") || code.endsWith("_type")) return `La ${name} debe ser un número.`;
    if (code === "value_error") {
      return "La ubicación (0, 0) no está en Chile: el GPS aún no tiene señal. Toca el mapa para marcar el punto.";
    }
    return `La ${name} debe estar entre -${limit} y ${limit}.`;
  }
  if (field === "plate") return "La patente no es válida: debe ser como AB1234 (antigua) o BBCL12 (nueva).";
  if (field === "description") {
    if (code === "string_too_long") return `La descripción puede tener hasta ${config.description_max} caracteres.`;
    return "La descripción no es válida.";
  }
  return `${field}: ${message}`;
}

function notice(kind, title, lines = []) {
  const box = htmlEl("div", `notice ${kind}`);
  box.append(htmlEl("strong", "", title));
  if (lines.length) {
    const list = htmlEl("ul");
    for (const line of lines) list.append(htmlEl("li", "", line));
    box.append(list);
  }
  status.replaceChildren(box);
  box.scrollIntoView({ block: "nearest", behavior: "smooth" });
  return box;
}

// --- sending ------------------------------------------------------------------------------

let draft = { body: null, key: null }; // the same report re-sent keeps its Idempotency-Key
let waitTimer = null;

function idempotencyKey(body) {
  const text = JSON.stringify(body);
  if (draft.body !== text) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    draft = { body: text, key: `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}` };
  }
  return draft.key;
}

function reportBody() {
  const body = { lat: parseCoordinate(fields.lat.value), lon: parseCoordinate(fields.lon.value) };
  const plate = fields.plate.value.trim();
  const description = fields.description.value.trim();
  if (plate) body.plate = plate;
  if (description) body.description = description;
  return body;
}

function checkPoint(body) {
  for (const field of ["lat", "lon"]) {
    const value = body[field];
    if (value === null) {
      showError(field, "Falta el punto: usa tu ubicación o toca el mapa.");
      return false;
    }
    if (!Number.isFinite(value)) {
      showError(field, `La ${field === "lat" ? "latitud" : "longitud"} debe ser un número.`);
      return false;
    }
  }
  return true;
}

function holdFor(seconds) {
  clearInterval(waitTimer);
  let left = seconds;
  submit.disabled = true;
  const tick = () => {
    if (left <= 0) {
      clearInterval(waitTimer);
      submit.disabled = false;
      submit.textContent = "Enviar reporte";
      return;
    }
    submit.textContent = `Espera ${left} s`;
    left -= 1;
  };
  tick();
  waitTimer = setInterval(tick, 1000);
}

async function send(body) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    return await fetch(config.reports_url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, application/problem+json",
        "Idempotency-Key": idempotencyKey(body),
      },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
  } finally {
    clearTimeout(timer);
  }
}

function accepted(answer) {
  const box = notice("ok", "¡Gracias! Recibimos tu reporte.");
  box.append(htmlEl("p", "", "El equipo del gremio ya lo ve en su mapa en vivo."));
  const ref = htmlEl("p");
  ref.append("Número de reporte: ", htmlEl("span", "report-ref", String(answer.id).slice(0, 8)));
  box.append(ref);
  box.dataset.reportId = answer.id;
  fields.plate.value = "";
  fields.description.value = "";
  fields.description.dispatchEvent(new Event("input"));
  draft = { body: null, key: null };
}

function refused(response, problem) {
  const errors = Array.isArray(problem?.errors) ? problem.errors : [];
  if (response.status === 422 || (response.status === 400 && errors.length)) {
    const lines = errors.map((error) => {
      const text = spanish(error);
      showError(error.field, text);
      return text;
    });
    notice("error", "Revisa lo marcado en rojo:", lines);
    return;
  }
  if (response.status === 429) {
    const wait = Number.parseInt(response.headers.get("Retry-After") || "60", 10);
    notice("warn", "Enviaste muchos reportes seguidos.", [
      `Espera ${wait} segundos y vuelve a intentarlo. Así evitamos los reportes automáticos.`,
    ]);
    holdFor(wait);
    return;
  }
  if (response.status === 413) {
    notice("error", "El reporte es demasiado largo.", ["Acorta la descripción y vuelve a intentarlo."]);
    return;
  }
  if (response.status === 503) {
    notice("error", "No pudimos guardar tu reporte ahora.", [
      "El sistema del gremio está ocupado. Vuelve a intentarlo en unos segundos: no se duplicará.",
    ]);
    return;
  }
  notice("error", "Algo salió mal al enviar el reporte.", [
    `El servidor respondió ${response.status}. Vuelve a intentarlo en un momento.`,
  ]);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (submit.disabled) return;
  status.replaceChildren();
  for (const [area, inputs] of [["where", [fields.lat, fields.lon]], ["plate", [fields.plate]],
    ["description", [fields.description]]]) clearError(area, inputs);
  const body = reportBody();
  if (!checkPoint(body)) {
    notice("error", "Falta saber dónde está el carrito.", ["Usa tu ubicación o toca el mapa."]);
    return;
  }
  submit.disabled = true;
  submit.textContent = "Enviando…";
  let response = null;
  try {
    response = await send(body);
    const answer = await response.json().catch(() => null);
    if (response.status === 202) accepted(answer);
    else refused(response, answer);
  } catch {
    notice("error", "No hay conexión con el servidor.", [
      "Revisa tu conexión y vuelve a intentarlo: el reporte no se duplicará.",
    ]);
  } finally {
    if (response?.status !== 429) {
      submit.disabled = false;
      submit.textContent = "Enviar reporte";
    }
  }
});
