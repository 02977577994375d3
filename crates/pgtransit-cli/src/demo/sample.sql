-- A small shop database with the problems real migrations meet.
CREATE EXTENSION hstore;
CREATE EXTENSION pg_trgm;           -- the demo's target lacks it
CREATE EXTENSION file_fdw;

CREATE SCHEMA app;
CREATE SCHEMA "Sales Ops";
CREATE SCHEMA scratch;              -- excluded by the demo task

CREATE TABLE app.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    attrs hstore,
    name text
);
CREATE INDEX customers_name_trgm ON app.customers USING gin (name gin_trgm_ops);

CREATE TABLE app.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint REFERENCES app.customers,
    total numeric(12,2) NOT NULL,
    total_with_tax numeric GENERATED ALWAYS AS (total * 1.2) STORED
);

-- No primary key, no unique index.
CREATE TABLE app.audit_log (at timestamptz NOT NULL DEFAULT now(), message text);

-- No primary key, but a unique constraint over NOT NULL columns: USING INDEX works.
CREATE TABLE app.order_lines (
    order_id bigint NOT NULL,
    line_no int NOT NULL,
    sku text,
    CONSTRAINT order_lines_order_line_key UNIQUE (order_id, line_no)
);

-- The only unique index is partial: it cannot serve as replica identity.
CREATE TABLE app.coupons (code text NOT NULL, active boolean NOT NULL DEFAULT true);
CREATE UNIQUE INDEX coupons_active_code ON app.coupons (code) WHERE active;

-- Unique but deferrable, and unique over a nullable column: neither qualifies.
CREATE TABLE app.slots (n int NOT NULL, CONSTRAINT slots_n_key UNIQUE (n) DEFERRABLE);
CREATE TABLE app.tags (name text UNIQUE);

-- A primary key, but identity NOTHING.
CREATE TABLE app.sessions (id uuid PRIMARY KEY, data jsonb);
ALTER TABLE app.sessions REPLICA IDENTITY NOTHING;

-- Quoted mixed-case and unicode names, no key at all.
CREATE TABLE "Sales Ops"."Überweisung ✓" ("Betrag" numeric NOT NULL, "Kommentar" text);

CREATE MATERIALIZED VIEW app.daily_totals AS
    SELECT count(*) AS orders, coalesce(sum(total), 0) AS revenue FROM app.orders;

CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v text);

CREATE SERVER local_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE app.os_release (line text) SERVER local_files
    OPTIONS (filename '/etc/os-release');

SELECT lo_from_bytea(0, 'a large object');

CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, payload text,
                         PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE TABLE app.vehicles (id int PRIMARY KEY, make text);
CREATE TABLE app.cars (doors int) INHERITS (app.vehicles);
ALTER TABLE app.cars ADD PRIMARY KEY (id);

CREATE TABLE scratch.tmp_import (line text);

CREATE FUNCTION app.no_drops() RETURNS event_trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'ddl: %', tg_tag; END $$;
CREATE EVENT TRIGGER app_ddl_notice ON ddl_command_end EXECUTE FUNCTION app.no_drops();

INSERT INTO app.customers (email, name, attrs)
    SELECT 'user' || i || '@example.com', 'User ' || i, hstore('tier', (i % 3)::text)
    FROM generate_series(1, 1000) i;
INSERT INTO app.orders (customer_id, total)
    SELECT 1 + i % 1000, (i % 500) + 0.99 FROM generate_series(1, 5000) i;
INSERT INTO app.order_lines SELECT o.id, l, 'SKU-' || l FROM app.orders o, generate_series(1, 3) l;
INSERT INTO app.audit_log (message) SELECT 'event ' || i FROM generate_series(1, 200) i;
INSERT INTO "Sales Ops"."Überweisung ✓" VALUES (10.5, 'grüße'), (99, NULL);
INSERT INTO app.events VALUES (1, '2025-06-01', 'a'), (2, '2026-02-01', 'b');
REFRESH MATERIALIZED VIEW app.daily_totals;
