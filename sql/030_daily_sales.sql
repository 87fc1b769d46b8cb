-- Daily sales (DESIGN §5): what the sales_daily DAG needs beyond 001. Safe to run twice.

-- How two client identifiers are compared (DESIGN §3): trimmed of what Python's str.strip()
-- removes, then lower-cased by Unicode rules. The database runs without a locale, where
-- lower() only knows ASCII, so the ICU root collation does the lower-casing; the result is
-- compared byte-wise ("C"), like Python compares strings. gremio.records.client_key is the
-- same rule in Python and a test keeps the two in step.
create or replace function client_key(client text) returns text
    language sql immutable strict parallel safe
as $$
    select lower(btrim(client, U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') collate "und-x-icu") collate "C"
$$;

-- The frequent clients as data (client, purchases, units), for the JSON report: the text
-- column keeps the CSV's `client:purchases;...` form, which a client name may make ambiguous.
alter table daily_master_stats
    add column if not exists frequent_clients_detail jsonb not null default '[]'::jsonb;

-- The whole guild's day, for the reports' totals: a client who bought from two masters is
-- one client here, so this is not the sum of daily_master_stats.
create table if not exists daily_sales_totals (
    day         date primary key,
    sales_count bigint not null,
    units_sold  bigint not null,
    clients     bigint not null,
    computed_at timestamptz not null default now()
);
