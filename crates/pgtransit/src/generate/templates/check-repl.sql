-- For every selected table whose UPDATE and DELETE could not be replicated (no primary key
-- and replica identity DEFAULT, or NOTHING, or an index that is gone), the statement that
-- fixes it: USING INDEX for the first unique index that qualifies, FULL otherwise.
WITH t AS (
    SELECT c.oid, n.nspname, c.relname, c.relreplident
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND (:selected)
      AND (c.relreplident = 'n'
           OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
           OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
)
SELECT format('ALTER TABLE %I.%I REPLICA IDENTITY %s;  -- %s', t.nspname, t.relname,
              coalesce('USING INDEX ' || quote_ident(ix.relname), 'FULL'),
              pg_size_pretty(pg_table_size(t.oid)))
FROM t LEFT JOIN LATERAL (
    SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
      AND i.indpred IS NULL AND i.indexprs IS NULL
      AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey[0:i.indnkeyatts - 1]) k(attnum)
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
    ORDER BY i.indnkeyatts, ic.relname LIMIT 1
) ix ON true
ORDER BY t.nspname, t.relname
