// bench.api's anchor: what a Node user would write instead of gremio's POST /v1/sales.
//
//   ANCHOR_MODE=per-request|long-lived KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 PORT=8001 node server.js
//
// POST /v1/sales takes gremio's sale body (plate, client, quantity, stock_remaining,
// location, sold_at) and produces it as JSON to the `sales` topic, keyed by plate, then
// answers 202 with where the record landed. Only the shape comes from the seed's
// description; it checks no token and validates no more than that `plate` is a string.
//
// * per-request: a new producer for each request: connect, send, disconnect (the seed's way);
// * long-lived: one producer for the process, connected at start, acks=-1. kafkajs's
//   idempotent producer is off unless ANCHOR_IDEMPOTENT=1 (kafkajs then requires
//   maxInFlightRequests=1, so requests queue behind one another on each broker connection).
"use strict";

const express = require("express");
const { Kafka, Partitioners, logLevel } = require("kafkajs");

const MODES = ["per-request", "long-lived"];
const mode = process.env.ANCHOR_MODE || process.argv[2] || "long-lived";
if (!MODES.includes(mode)) {
  console.error(`ANCHOR_MODE must be one of ${MODES.join(", ")}, not ${mode}`);
  process.exit(2);
}
const idempotent = process.env.ANCHOR_IDEMPOTENT === "1";
const port = Number(process.env.PORT || 8001);
const host = process.env.HOST || "127.0.0.1";
const topic = process.env.ANCHOR_TOPIC || "sales";

const kafka = new Kafka({
  clientId: `gremio-anchor-${mode}`,
  brokers: (process.env.KAFKA_BOOTSTRAP_SERVERS || "127.0.0.1:9092").split(","),
  logLevel: logLevel.WARN,
});

function newProducer() {
  const options = { createPartitioner: Partitioners.DefaultPartitioner };
  if (idempotent) Object.assign(options, { idempotent: true, maxInFlightRequests: 1 });
  return kafka.producer(options);
}

let shared = null; // long-lived mode's producer, once connected

async function produce(plate, value) {
  const message = { topic, acks: -1, messages: [{ key: plate, value }] };
  if (shared) return (await shared.send(message))[0];
  const producer = newProducer();
  await producer.connect();
  try {
    return (await producer.send(message))[0];
  } finally {
    await producer.disconnect();
  }
}

const app = express();
app.use(express.json({ limit: "64kb" }));

app.get("/readyz", (req, res) => {
  res.json({ status: "ready", mode, idempotent });
});

app.post("/v1/sales", async (req, res) => {
  const sale = req.body;
  if (!sale || typeof sale.plate !== "string") {
    res.status(400).json({ error: "plate is required" });
    return;
  }
  try {
    const landed = await produce(sale.plate, JSON.stringify(sale));
    res.status(202).json({ topic: landed.topicName, partition: landed.partition, offset: landed.baseOffset });
  } catch (err) {
    res.status(503).json({ error: String(err.message || err) });
  }
});

async function main() {
  if (mode === "long-lived") {
    shared = newProducer();
    await shared.connect();
  }
  const server = app.listen(port, host, () => {
    console.log(`anchor ${mode} (idempotent=${idempotent}) on http://${host}:${port}`);
  });
  const stop = async () => {
    server.close();
    if (shared) await shared.disconnect().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
