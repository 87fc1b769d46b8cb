"""`gremio simulate`: carts, clients, applicants and the odd strange event, against the API.

`make up` runs it (unless SIMULATE=0) so the live view, the stock service and the daily
report have something to show:

* N carts (SIMULATE_CARTS) walk around central Santiago at a walking pace and ping every
  SIMULATE_PING_SECONDS. They sell to their own pool of returning clients; stock drains
  from 100 (one cart in four sets out with what was left of the morning, a few doughs over
  the threshold, so the first refill orders come within minutes of `make up`) and, once it
  drops under the threshold, the cart is restocked a few minutes later.
* Now and then a cart goes "offline" for a few minutes, keeps its sales, and sends them
  through /v1/sales/batch when it is back.
* Strange events: a cart jumps kilometres, a ping comes from outside the service area, an
  unregistered cart works the streets, the public reports a fugitive cart.
* Applicants apply to join the guild; some premium, some with a bad RUT or email (4xx).

The fleet (plates, owners, RUTs) depends only on the cart's number, never on --seed, and
its premium applications carry a fixed Idempotency-Key: a restart re-sends the same
application ids, so it never creates new members. --seed fixes everything else.

--speedup shortens every wait (pings, sales, restocks, events) but not the walking: carts
still move at walking pace per real second, so the live view's 30 km/h jump rule only
fires for the deliberate jumps.

It logs one readable line per thing it does, survives API outages (waits with backoff,
keeps sales and resends them with the same Idempotency-Key) and never crashes on a bad
answer.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import math
import random
import signal
import time
import unicodedata
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from stdnum.cl import rut as stdnum_rut

from gremio.records import now_utc
from gremio.settings import Settings, get_settings
from gremio.tokens import cart_token

log = logging.getLogger("gremio.simulate")

CENTRE = (-33.4489, -70.6693)  # Plaza de Armas
STREETS = (-33.56, -33.36, -70.78, -70.55)  # where carts walk: central Santiago
WALK_KMH = (3.0, 5.0)
M_PER_DEG_LAT = 111_320.0
CONSONANTS = "BCDFGHJKLPRSTVWXYZ"

FIRST_NAMES = (
    "María", "José", "Ana", "Juan", "Camila", "Luis", "Valentina", "Pedro", "Francisca", "Diego",
    "Constanza", "Matías", "Javiera", "Cristóbal", "Catalina", "Felipe", "Daniela", "Rodrigo",
    "Fernanda", "Sebastián", "Isidora", "Tomás", "Antonia", "Benjamín", "Paz", "Ignacio",
)  # fmt: skip
LAST_NAMES = (
    "González", "Muñoz", "Rojas", "Díaz", "Pérez", "Soto", "Contreras", "Silva", "Martínez",
    "Sepúlveda", "Morales", "Rodríguez", "López", "Fuentes", "Hernández", "Torres", "Araya",
    "Flores", "Espinoza", "Valenzuela", "Castillo", "Tapia", "Reyes", "Gutiérrez", "Castro",
)  # fmt: skip
CLIENT_NAMES = (
    "don-pepe", "la-tía-rosa", "el-flaco", "señora-marta", "cabro-chico", "don-lucho", "la-vecina",
    "el-profe", "carabinero", "taxista", "estudiante", "oficinista", "guardia", "feriante",
)  # fmt: skip
REPORTS = (
    "carro sin credencial del gremio en la esquina",
    "venden sopaipillas sin permiso frente al metro",
    "carro pirata con pebre sospechoso",
    "sopaipillas a 100 pesos, seguro no es del gremio",
    None,
)


# --- who is who (stable across runs) -------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    plate: str
    first_name: str
    last_name: str
    rut: str
    email: str

    def application(self, premium: bool) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "rut": self.rut,
            "email": self.email,
            "plate": self.plate,
            "premium": premium,
        }


def make_rut(rng: random.Random, low: int = 5_000_000, high: int = 26_000_000) -> str:
    """A RUT with a correct check digit, written the way people write it (12.345.678-5)."""
    body = str(rng.randint(low, high))
    return f"{int(body):,}".replace(",", ".") + "-" + stdnum_rut.calc_check_digit(body)


def make_plate(rng: random.Random) -> str:
    """A plate of the current format (four consonants, two digits)."""
    return "".join(rng.choice(CONSONANTS) for _ in range(4)) + f"{rng.randint(10, 99)}"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def make_person(rng: random.Random, plate: str, tag: str) -> Owner:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{_ascii(first)}.{_ascii(last)}.{tag}@example.cl"
    return Owner(plate, first, last, make_rut(rng), email)


def fleet(count: int) -> list[Owner]:
    """The simulated carts and their owners: cart i is the same on every run, whatever the seed."""
    owners: list[Owner] = []
    plates: set[str] = set()
    ruts: set[str] = set()
    for index in range(count):
        rng = random.Random(f"gremio-fleet-{index}")
        owner = make_person(rng, make_plate(rng), f"carro{index + 1}")
        while owner.plate in plates or owner.rut in ruts:
            owner = make_person(rng, make_plate(rng), f"carro{index + 1}")
        plates.add(owner.plate)
        ruts.add(owner.rut)
        owners.append(owner)
    return owners


def pirates(count: int, taken: set[str]) -> list[str]:
    """Plates of carts that work the streets without being members (stable, never in the fleet)."""
    rng = random.Random("gremio-pirates")
    found: list[str] = []
    while len(found) < count:
        plate = make_plate(rng)
        if plate not in taken and plate not in found:
            found.append(plate)
    return found


# --- geometry ---------------------------------------------------------------------------------------


def move(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    """The point `metres` away along `bearing` (radians from north); flat-earth is plenty here."""
    dlat = metres * math.cos(bearing) / M_PER_DEG_LAT
    dlon = metres * math.sin(bearing) / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (b[0] - a[0]) * M_PER_DEG_LAT
    dlon = (b[1] - a[1]) * M_PER_DEG_LAT * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dlat, dlon)


def bearing_to(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = b[0] - a[0]
    dlon = (b[1] - a[1]) * math.cos(math.radians(a[0]))
    return math.atan2(dlon, dlat)


# --- the API, as the simulator sees it --------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    retry_after: float | None = None


class ApiDown(Exception):
    """No answer at all (refused, reset, timed out)."""


class Transport(Protocol):
    def post(self, path: str, body: Any, headers: dict[str, str]) -> Reply: ...


class HttpTransport:
    """JSON over HTTP with the standard library (a few requests a second need nothing more)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def post(self, path: str, body: Any, headers: dict[str, str]) -> Reply:
        request = urllib.request.Request(  # noqa: S310 - the URL is the API's, from settings or --api
            self.base_url + path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return Reply(response.status, _json(response.read()), None)
        except urllib.error.HTTPError as exc:
            retry = exc.headers.get("Retry-After")
            return Reply(exc.code, _json(exc.read()), float(retry) if retry and retry.isdigit() else None)
        except (OSError, urllib.error.URLError) as exc:
            raise ApiDown(str(getattr(exc, "reason", exc))) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def where(reply: Reply) -> str:
    """`sales p2 #1234` from a 202 body."""
    body = reply.body or {}
    return f"{body.get('topic')} p{body.get('partition')} #{body.get('offset')}"


def problem_summary(reply: Reply) -> str:
    body = reply.body if isinstance(reply.body, dict) else {}
    errors = body.get("errors") or []
    if errors:
        return "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors[:3])
    return str(body.get("detail", ""))


# --- the world ----------------------------------------------------------------------------------------


@dataclass
class Cart:
    owner: Owner
    token: str
    lat: float
    lon: float
    bearing: float
    speed_ms: float
    sale_every: float  # mean seconds between sales (before speedup)
    regulars: list[str]
    stock: int = 100
    moved_at: float = 0.0
    restock_at: float | None = None
    offline_until: float | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)  # sales made offline, for a batch
    unsent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (Idempotency-Key, sale)
    sync_key: str | None = None

    @property
    def plate(self) -> str:
        return self.owner.plate

    @property
    def position(self) -> tuple[float, float]:
        return self.lat, self.lon

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


FLEET_WARMUP_SECONDS = 20.0
RESEND_TRIES = 5  # a request with no answer or a 503 is sent again, with its Idempotency-Key


class Simulation:
    """The simulated guild: a queue of timed actions, each of which may talk to the API."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        carts: int,
        seed: int | None = None,
        speedup: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = now_utc,
    ) -> None:
        self.settings = settings
        self.api = transport
        self.rng = random.Random(seed)
        self.speedup = max(speedup, 0.01)
        self.clock = clock
        self.wall = wall
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.stats: Counter[str] = Counter()
        self.down_until = 0.0
        self.backoff = 0.0
        owners = fleet(carts)
        self.pirate_plates = pirates(3, {o.plate for o in owners})
        self.carts = [self._new_cart(owner) for owner in owners]

    def _new_cart(self, owner: Owner) -> Cart:
        rng = self.rng
        lat, lon = move(*CENTRE, rng.uniform(0, 2 * math.pi), rng.uniform(0, 5000))
        tag = owner.plate[-2:]
        regulars = [f"{rng.choice(CLIENT_NAMES)}-{tag}{n}" for n in range(rng.randint(6, 15))]
        return Cart(
            owner=owner,
            token=cart_token(owner.plate, self.settings),
            lat=lat,
            lon=lon,
            bearing=rng.uniform(0, 2 * math.pi),
            speed_ms=rng.uniform(*WALK_KMH) / 3.6,
            sale_every=rng.uniform(15, 60),
            regulars=regulars,
            stock=self._opening_stock(),
            moved_at=self.clock(),
        )

    def _opening_stock(self) -> int:
        """A full cart, or one cart in four with the morning's leftovers (a few over the threshold)."""
        if self.rng.random() < 0.25:
            return min(
                self.settings.stock_refill_target, self.settings.stock_threshold + self.rng.randint(2, 12)
            )
        return self.settings.stock_refill_target

    # --- scheduling -------------------------------------------------------------------------

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        """Run `action` after `seconds` of simulated time (shortened by --speedup)."""
        heapq.heappush(self.queue, (self.clock() + seconds / self.speedup, next(self._order), action))

    def start(self) -> None:
        ping = self.settings.simulate_ping_seconds
        for index, cart in enumerate(self.carts):
            self.later(index * 0.2, lambda cart=cart: self.register(cart))
            # Carts set out once the premium fast-track has had time to approve their owners,
            # so the board does not open with every cart flagged as unregistered.
            self.later(FLEET_WARMUP_SECONDS + self.rng.uniform(0, ping), lambda cart=cart: self.ping(cart))
            self.later(
                FLEET_WARMUP_SECONDS + self.rng.expovariate(1 / cart.sale_every),
                lambda cart=cart: self.sell(cart),
            )
        self.later(self.rng.uniform(20, 60), self.applicant)
        self.later(self.rng.uniform(60, 180), self.strange_event)
        self.later(self.rng.uniform(120, 300), self.go_offline)
        heapq.heappush(self.queue, (self.clock() + 60, next(self._order), self.summary))

    def run(self, until: float | None, stopped: Callable[[], bool], sleep: Callable[[float], None]) -> None:
        """Run due actions until `until` (a clock time) or until `stopped()`."""
        while not stopped() and self.queue:
            now = self.clock()
            if until is not None and now >= until:
                return
            due = self.queue[0][0]
            if due > now:
                sleep((due if until is None else min(due, until)) - now)
                continue
            _, _, action = heapq.heappop(self.queue)
            try:
                action()
            except Exception:  # a simulator bug must not stop the demo
                self.stats["errors"] += 1
                log.exception("simulator action failed; carrying on")

    # --- talking to the API -------------------------------------------------------------------

    def post(self, path: str, body: Any, headers: dict[str, str]) -> Reply | None:
        """One request, or None while the API is down (then we back off and retry later)."""
        now = self.clock()
        if now < self.down_until:
            return None
        try:
            reply = self.api.post(path, body, headers)
        except ApiDown as exc:
            self._api_down(f"unreachable ({exc})")
            return None
        if reply.status >= 500:
            self._api_down(f"answered {reply.status}: {problem_summary(reply)}", reply.retry_after)
            return None
        if self.backoff:
            log.info("API is answering again")
            self.backoff = 0.0
        self.stats["requests"] += 1
        return reply

    def _api_down(self, why: str, retry_after: float | None = None) -> None:
        self.backoff = min(30.0, max(1.0, self.backoff * 2))
        wait = max(self.backoff, retry_after or 0)
        self.down_until = self.clock() + wait
        self.stats["api_down"] += 1
        log.warning("API %s; retrying in %.0f s (sales are kept and resent)", why, wait)

    def key(self) -> str:
        """An Idempotency-Key from the seeded generator (so a seeded run is repeatable)."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- membership ----------------------------------------------------------------------------

    def register(self, cart: Cart) -> None:
        """The cart's owner applies for premium membership (same id on every run)."""
        reply = self.post(
            "/v1/members",
            cart.owner.application(premium=True),
            {"Idempotency-Key": f"sim-fleet-{cart.plate}"},
        )
        if reply is None or reply.status == 429:
            self.later(
                _retry_in(reply, self.down_until - self.clock()) * self.speedup, lambda: self.register(cart)
            )
            return
        if reply.status == 202:
            log.info("cart %s: its owner applied for premium membership -> %s", cart.plate, where(reply))
        else:
            log.error(
                "cart %s: membership application refused: %s %s",
                cart.plate,
                reply.status,
                problem_summary(reply),
            )

    def applicant(self) -> None:
        """Someone from the public applies; one in five gets something wrong."""
        rng = self.rng
        person = make_person(
            rng, make_plate(rng) if rng.random() < 0.7 else _old_plate(rng), f"{rng.randint(1, 9999)}"
        )
        body = person.application(premium=rng.random() < 0.3)
        mistake = None
        if rng.random() < 0.2:
            mistake = rng.choice(["rut", "email", "plate", "first_name"])
            body[mistake] = {
                "rut": _bad_check_digit(person.rut),
                "email": person.email.replace("@", " at "),
                "plate": "ABC-123",
                "first_name": "   ",
            }[mistake]
        if rng.random() < 0.3:  # some write in Spanish
            body = {_SPANISH.get(k, k): v for k, v in body.items()}
        self.later(rng.expovariate(1 / 90), self.applicant)
        self.send_application(body, self.key(), mistake)

    def send_application(self, body: dict[str, Any], key: str, mistake: str | None, tries: int = 0) -> None:
        """Send one application; after a 503 or no answer, the same body with the same key."""
        reply = self.post("/v1/members", body, {"Idempotency-Key": key})
        if reply is None:
            # It may have been stored (DESIGN §4): only the same Idempotency-Key keeps it single.
            if tries < RESEND_TRIES:
                self.later(
                    _retry_in(reply, self.down_until - self.clock()) * self.speedup,
                    lambda: self.send_application(body, key, mistake, tries + 1),
                )
            else:
                self.stats["applications_not_sent"] += 1
            return
        if reply.status == 429:
            self.stats["applications_not_sent"] += 1  # rate-limited: they try another day
            return
        kind = "premium" if body.get("premium") else "regular"
        if reply.status == 202:
            self.stats["applications"] += 1
            log.info("an applicant applied for %s membership -> %s", kind, where(reply))
        elif mistake and 400 <= reply.status < 500:
            self.stats["refused_as_intended"] += 1
            log.info(
                "applicant with a bad %s refused as intended: %s %s",
                mistake,
                reply.status,
                problem_summary(reply),
            )
        else:
            log.warning("applicant refused: %s %s", reply.status, problem_summary(reply))

    # --- carts ------------------------------------------------------------------------------------

    def walk(self, cart: Cart) -> None:
        """Move the cart along its street at walking pace for the real time since it last moved."""
        now = self.clock()
        metres = cart.speed_ms * max(0.0, now - cart.moved_at)
        cart.moved_at = now
        if self.rng.random() < 0.15:
            cart.bearing += self.rng.choice([-1, 1]) * math.pi / 2  # turns a corner
        lat, lon = move(cart.lat, cart.lon, cart.bearing, metres)
        s, n, w, e = STREETS
        if not (s < lat < n and w < lon < e):
            cart.bearing = bearing_to(cart.position, CENTRE)  # back towards the centre
            lat, lon = move(cart.lat, cart.lon, cart.bearing, metres)
        cart.lat, cart.lon = lat, lon

    def ping(self, cart: Cart) -> None:
        self.later(self.settings.simulate_ping_seconds, lambda: self.ping(cart))
        self.walk(cart)
        if self._offline(cart):
            return
        self.send_unsent(cart)
        body = {
            "plate": cart.plate,
            "lat": round(cart.lat, 6),
            "lon": round(cart.lon, 6),
            "recorded_at": self.now(),
        }
        reply = self.post("/v1/locations", body, cart.auth)
        if reply is not None and reply.status == 202:
            self.stats["pings"] += 1
            log.debug("cart %s at (%.5f, %.5f) -> %s", cart.plate, cart.lat, cart.lon, where(reply))
        elif reply is not None:
            log.warning("cart %s: ping refused: %s %s", cart.plate, reply.status, problem_summary(reply))

    def sell(self, cart: Cart) -> None:
        self.later(self.rng.expovariate(1 / cart.sale_every), lambda: self.sell(cart))
        if cart.stock <= 0:
            return  # sold out: waiting for the restock
        self.walk(cart)
        quantity = min(cart.stock, self.rng.choice([1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 10]))
        cart.stock -= quantity
        client = (
            self.rng.choice(cart.regulars)
            if self.rng.random() < 0.8
            else f"paseante-{self.rng.randint(1, 999)}"
        )
        sale = {
            "plate": cart.plate,
            "client": client,
            "quantity": quantity,
            "sold_at": self.now(),
            "stock_remaining": cart.stock,
            "location": {"lat": round(cart.lat, 6), "lon": round(cart.lon, 6)},
        }
        if cart.stock < self.settings.stock_threshold and cart.restock_at is None:
            delay = self.rng.uniform(120, 360)
            cart.restock_at = self.clock() + delay / self.speedup
            self.later(delay, lambda: self.restock(cart))
            log.info("cart %s: stock %d is under %d; restock in %.0f min", cart.plate, cart.stock,
                     self.settings.stock_threshold, delay / 60)  # fmt: skip
        if self._offline(cart):
            cart.kept.append(sale)
            log.info(
                "cart %s (offline) sold %d to %s, stock %d: kept for later",
                cart.plate,
                quantity,
                client,
                cart.stock,
            )
            return
        self.send_unsent(cart)
        self.send_sale(cart, self.key(), sale)

    def send_sale(self, cart: Cart, key: str, sale: dict[str, Any]) -> None:
        if not self._post_sale(cart, key, sale):
            cart.unsent.append((key, sale))  # resent with the same key: the same id downstream

    def send_unsent(self, cart: Cart) -> None:
        """Sales the API did not take while it was down, oldest first, with their own keys."""
        while cart.unsent and self._post_sale(cart, *cart.unsent[0]):
            cart.unsent.pop(0)

    def _post_sale(self, cart: Cart, key: str, sale: dict[str, Any]) -> bool:
        """True once the API has answered (202 or a refusal); False while it is down."""
        reply = self.post("/v1/sales", sale, {**cart.auth, "Idempotency-Key": key})
        if reply is None:
            return False
        if reply.status == 202:
            self.stats["sales"] += 1
            log.info("cart %s sold %d to %s, stock %d -> %s", cart.plate, sale["quantity"], sale["client"],
                     sale["stock_remaining"], where(reply))  # fmt: skip
        else:
            log.warning("cart %s: sale refused: %s %s", cart.plate, reply.status, problem_summary(reply))
        return True

    def restock(self, cart: Cart) -> None:
        cart.stock = self.settings.stock_refill_target
        cart.restock_at = None
        self.stats["restocks"] += 1
        log.info("cart %s restocked to %d", cart.plate, cart.stock)

    # --- offline carts -------------------------------------------------------------------------

    def _offline(self, cart: Cart) -> bool:
        if cart.offline_until is None:
            return False
        if self.clock() < cart.offline_until:
            return True
        if self.sync(cart):
            cart.offline_until = None
            return False
        return True  # the API is down: still holding the sales

    def go_offline(self) -> None:
        self.later(self.rng.uniform(240, 600), self.go_offline)
        online = [c for c in self.carts if c.offline_until is None]
        if not online:
            return
        cart = self.rng.choice(online)
        minutes = self.rng.uniform(1.5, 4)
        cart.offline_until = self.clock() + minutes * 60 / self.speedup
        self.stats["offline"] += 1
        log.info("cart %s lost its connection for %.0f min; it keeps its sales", cart.plate, minutes)

    def sync(self, cart: Cart) -> bool:
        """Send the kept sales in one batch; True once they are accepted (or there were none)."""
        if not cart.kept:
            return True
        if cart.sync_key is None:
            cart.sync_key = self.key()  # kept until the batch goes through: retries get the same ids
        reply = self.post(
            "/v1/sales/batch", {"sales": cart.kept}, {**cart.auth, "Idempotency-Key": cart.sync_key}
        )
        if reply is None:
            return False
        if reply.status == 202:
            body = reply.body or {}
            self.stats["batches"] += 1
            self.stats["sales"] += int(body.get("accepted", 0))
            log.info("cart %s back online: sent %d kept sales in one batch (%s accepted, %s refused)",
                     cart.plate, len(cart.kept), body.get("accepted"), body.get("rejected"))  # fmt: skip
        else:
            log.warning("cart %s: batch refused: %s %s", cart.plate, reply.status, problem_summary(reply))
        cart.kept = []
        cart.sync_key = None
        return True

    # --- strange events ---------------------------------------------------------------------------

    def strange_event(self) -> None:
        self.later(self.rng.expovariate(1 / 180), self.strange_event)
        events = [self.event_jump, self.event_out_of_area, self.event_unregistered, self.event_report]
        self.rng.choice([*events, self.event_report])()  # reports are the commonest
        self.stats["strange_events"] += 1

    def _some_cart(self) -> Cart | None:
        online = [c for c in self.carts if c.offline_until is None]
        return self.rng.choice(online) if online else None

    def event_jump(self) -> None:
        cart = self._some_cart()
        if cart is None:
            return
        before = cart.position
        cart.lat, cart.lon = move(
            cart.lat, cart.lon, self.rng.uniform(0, 2 * math.pi), self.rng.uniform(2500, 5000)
        )
        log.info("strange event: cart %s jumps %.1f km", cart.plate, distance_m(before, cart.position) / 1000)
        self.ping_once(cart.plate, cart.position, cart.auth)

    def event_out_of_area(self) -> None:
        cart = self._some_cart()
        if cart is None:
            return
        s = self.settings
        outside = (
            self.rng.uniform(s.service_area_lat_max + 0.05, s.service_area_lat_max + 0.4),
            self.rng.uniform(s.service_area_lon_min - 0.5, s.service_area_lon_min - 0.05),
        )
        log.info(
            "strange event: cart %s pings from outside the service area (%.4f, %.4f)", cart.plate, *outside
        )
        self.ping_once(cart.plate, outside, cart.auth)

    def event_unregistered(self) -> None:
        plate = self.rng.choice(self.pirate_plates)
        near = move(*CENTRE, self.rng.uniform(0, 2 * math.pi), self.rng.uniform(200, 4000))
        log.info("strange event: unregistered cart %s works near (%.4f, %.4f)", plate, *near)
        auth = {"Authorization": f"Bearer {cart_token(plate, self.settings)}"}
        for step in range(self.rng.randint(2, 5)):
            position = move(*near, self.rng.uniform(0, 2 * math.pi), 5.0 * step)
            self.later(
                step * self.settings.simulate_ping_seconds, lambda p=position: self.ping_once(plate, p, auth)
            )

    def event_report(self) -> None:
        cart = self._some_cart()
        body: dict[str, Any] = {}
        if cart is not None and self.rng.random() < 0.5:
            # Someone mistakes a guild cart for a pirate: the nearest live cart is within metres.
            lat, lon = move(cart.lat, cart.lon, self.rng.uniform(0, 2 * math.pi), self.rng.uniform(5, 60))
            what = f"near cart {cart.plate}"
        else:
            lat, lon = move(*CENTRE, self.rng.uniform(0, 2 * math.pi), self.rng.uniform(0, 6000))
            what = "far from any guild cart"
            if self.rng.random() < 0.5:
                body["patente"] = self.rng.choice(self.pirate_plates)
        body.update(lat=round(lat, 6), lon=round(lon, 6))
        description = self.rng.choice(REPORTS)
        if description:
            body["description"] = description
        self.send_report(body, self.key(), what)

    def send_report(self, body: dict[str, Any], key: str, what: str, tries: int = 0) -> None:
        """Send one fugitive report; after a 503 or no answer, the same body with the same key."""
        reply = self.post("/v1/reports", body, {"Idempotency-Key": key})
        if reply is None and tries < RESEND_TRIES:
            self.later(
                _retry_in(reply, self.down_until - self.clock()) * self.speedup,
                lambda: self.send_report(body, key, what, tries + 1),
            )
        elif reply is not None and reply.status == 202:
            self.stats["reports"] += 1
            log.info("strange event: the public reports a fugitive cart %s -> %s", what, where(reply))

    def ping_once(self, plate: str, position: tuple[float, float], auth: dict[str, str]) -> None:
        body = {
            "plate": plate,
            "lat": round(position[0], 6),
            "lon": round(position[1], 6),
            "recorded_at": self.now(),
        }
        reply = self.post("/v1/locations", body, auth)
        if reply is not None and reply.status == 202:
            self.stats["pings"] += 1
            log.info("  %s at (%.4f, %.4f) -> %s", plate, position[0], position[1], where(reply))

    # --- reporting --------------------------------------------------------------------------------

    def now(self) -> str:
        return self.wall().isoformat(timespec="milliseconds")

    def summary(self) -> None:
        heapq.heappush(self.queue, (self.clock() + 60, next(self._order), self.summary))
        shown = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in sorted(self.stats.items()))
        log.info("last minute: %s", shown or "nothing sent")
        self.stats.clear()


_SPANISH = {"first_name": "nombre", "last_name": "apellido", "email": "correo", "plate": "patente"}


def _old_plate(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(2))  # pragma: allowlist secret
    return f"{letters}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"


def _bad_check_digit(rut: str) -> str:
    body, check = rut.rsplit("-", 1)
    digits = "0123456789K"
    return f"{body}-{digits[(digits.index(check) + 1) % len(digits)]}"


def _retry_in(reply: Reply | None, down_for: float) -> float:
    if reply is not None and reply.retry_after:
        return reply.retry_after
    return max(1.0, down_for)


# --- the command ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """`gremio simulate [--carts N] [--seed S] [--api URL] [--duration SECONDS] [--speedup X]`."""
    settings = get_settings()
    carts = args.carts if args.carts is not None else settings.simulate_carts
    base_url = args.api or f"http://127.0.0.1:{settings.api_port}"
    speedup = args.speedup or 1.0
    transport = HttpTransport(base_url, timeout=settings.delivery_timeout_seconds + 10)
    sim = Simulation(settings, transport, carts, seed=args.seed, speedup=speedup)
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop["now"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "simulating %d carts around Santiago against %s (seed %s, speedup %g, a ping every %g s)",
        carts, base_url, args.seed, speedup, settings.simulate_ping_seconds / speedup,
    )  # fmt: skip
    sim.start()
    until = time.monotonic() + args.duration if args.duration else None
    try:
        sim.run(until, lambda: stop["now"], lambda seconds: time.sleep(max(0.0, min(seconds, 0.5))))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    kept = sum(len(c.kept) + len(c.unsent) for c in sim.carts)
    log.info("simulation stopped%s", f"; {kept} sales were never sent" if kept else "")
    return 0


__all__ = ["Simulation", "fleet", "main"]
