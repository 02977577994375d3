-- One query that counts, exactly, the rows of every replicated table (roots include their
-- partitions). It is generated on the source and run on both sides.
SELECT string_agg(format('SELECT %L AS name, count(*) AS n FROM %I.%I', format('%I.%I', n.nspname, c.relname),
                         n.nspname, c.relname), E'\nUNION ALL ' ORDER BY n.nspname, c.relname) || E'\nORDER BY 1'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition AND (:selected)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
