-- gremio's system of record (DESIGN §6). Safe to run twice.

create table if not exists member_applications (
    id              uuid primary key,
    first_name      text not null,
    last_name       text not null,
    rut             text not null,
    email           text not null,
    plate           text not null,
    premium         boolean not null,
    received_at     timestamptz not null,
    status          text not null default 'pending'
                    check (status in ('pending', 'approved', 'rejected')),
    reason          text,
    decided_at      timestamptz,
    decided_by      text,
    kafka_partition integer,
    kafka_offset    bigint
);
create index if not exists member_applications_pending
    on member_applications (received_at) where status = 'pending';
create index if not exists member_applications_rut on member_applications (rut);

create table if not exists members (
    rut            text primary key,
    first_name     text not null,
    last_name      text not null,
    email          text not null,
    plate          text not null unique,
    premium        boolean not null default false,
    application_id uuid unique references member_applications (id),
    approved_at    timestamptz not null default now()
);

create table if not exists background_flags (
    rut        text primary key,
    reason     text not null,
    flagged_at timestamptz not null default now()
);

create table if not exists sales (
    id              uuid primary key,
    plate           text not null,
    client          text not null,
    quantity        integer not null check (quantity between 1 and 1000),
    sold_at         timestamptz not null,
    stock_remaining integer not null check (stock_remaining between 0 and 10000),
    lat             double precision not null,
    lon             double precision not null,
    received_at     timestamptz not null
);
create index if not exists sales_sold_at on sales (sold_at);
create index if not exists sales_plate_sold_at on sales (plate, sold_at);

create table if not exists replenishment_orders (
    id                   uuid primary key,
    plate                text not null,
    sale_id              uuid not null unique,
    stock_at_trigger     integer not null,
    quantity             integer not null check (quantity > 0),
    status               text not null default 'open' check (status in ('open', 'delivered')),
    created_at           timestamptz not null,
    delivered_at         timestamptz,
    delivered_by_sale_id uuid
);
-- At most one open order per cart: the database enforces what the service promises.
create unique index if not exists replenishment_orders_one_open
    on replenishment_orders (plate) where status = 'open';

create table if not exists fugitive_reports (
    id                 uuid primary key,
    lat                double precision not null,
    lon                double precision not null,
    description        text,
    plate              text,
    received_at        timestamptz not null,
    nearest_plate      text,
    nearest_distance_m double precision
);
create index if not exists fugitive_reports_received_at on fugitive_reports (received_at);

create table if not exists alerts (
    id         uuid primary key,
    kind       text not null
               check (kind in ('jump', 'out_of_area', 'unregistered_cart', 'fugitive_report')),
    plate      text,
    lat        double precision,
    lon        double precision,
    detail     text not null,
    created_at timestamptz not null
);
create index if not exists alerts_created_at on alerts (created_at);

create table if not exists daily_master_stats (
    day                  date not null,
    rut                  text not null,  -- the master's RUT, or 'unregistered'
    name                 text not null,
    plate                text not null,
    sales_count          integer not null,
    units_sold           integer not null,
    clients              integer not null,
    avg_units_per_client numeric(12, 2) not null,
    frequent_clients     text not null,
    computed_at          timestamptz not null default now(),
    primary key (day, rut)
);
