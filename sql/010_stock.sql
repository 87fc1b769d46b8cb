-- Stock replenishment (consumers/stock, docs/STOCK.md). Safe to run twice.

-- Outbox mark: set once the order's `replenishments` record is acknowledged by the broker.
-- An order committed but never marked (a crash in between) is published again when its
-- sale is redelivered.
alter table replenishment_orders add column if not exists published_at timestamptz;

create index if not exists replenishment_orders_plate_created
    on replenishment_orders (plate, created_at);

-- Each cart's newest known stock: the newest sale (by sold_at) wins. The service locks a
-- cart's row for the length of a batch, and ignores sales older than `sold_at` here: an old
-- report arriving late (an offline cart's backlog) must not close a newer order.
create table if not exists cart_stock (
    plate           text primary key,
    stock_remaining integer,
    sale_id         uuid,
    sold_at         timestamptz,
    updated_at      timestamptz not null default now()
);

-- The sales the service has applied, by id, kept for STOCK_DEDUPE_RETENTION_HOURS. A sale
-- seen again (a redelivery after a crash, or a cart's retried request, which keeps its id)
-- is skipped exactly, whatever its timestamps say.
create table if not exists replenishment_sales (
    sale_id    uuid primary key,
    applied_at timestamptz not null default now()
);
create index if not exists replenishment_sales_applied_at on replenishment_sales (applied_at);
