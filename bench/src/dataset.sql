-- The benchmark dataset, on top of `pgbench -i -s SCALE`. :big_rows sets the big table.
-- A wide table whose text, jsonb and bytea values are large enough to be TOASTed.
CREATE TABLE wide (
    id bigint PRIMARY KEY,
    title text NOT NULL,
    body text,
    doc jsonb,
    blob bytea,
    created timestamptz NOT NULL DEFAULT '2026-01-01'
);
INSERT INTO wide (id, title, body, doc, blob)
SELECT g, 'title ' || g,
       (SELECT string_agg(md5((g * 31 + i)::text), ' ') FROM generate_series(1, 80) i),
       jsonb_build_object('id', g, 'tags', (SELECT jsonb_agg(md5((g + i)::text)) FROM generate_series(1, 60) i)),
       decode((SELECT string_agg(md5((g * 7 + i)::text), '') FROM generate_series(1, 40) i), 'hex')
FROM generate_series(1::bigint, :wide_rows) g;
CREATE INDEX wide_title ON wide (title);

-- One big table holding most of the bytes.
CREATE TABLE big (
    id bigint PRIMARY KEY,
    account int NOT NULL,
    amount numeric(12, 2) NOT NULL,
    at timestamptz NOT NULL,
    note text NOT NULL
);
INSERT INTO big
SELECT g, ((g * 7919) % 100000)::int, (g % 100000) / 100.0, '2025-01-01'::timestamptz + g * interval '1 second',
       'note ' || md5(g::text) || ' ' || md5((g + 1)::text)
FROM generate_series(1::bigint, :big_rows) g;
CREATE INDEX big_account ON big (account);
CREATE INDEX big_at ON big (at);

-- Many small tables.
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, v text)', i);
        EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text) FROM generate_series(1, 200) g', i);
    END LOOP;
END $$;
ANALYZE;

-- pgbench_history has no key: FULL identity, as `pgtransit check replica-identity --fix` gives it
-- (a table without one is never published).
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
