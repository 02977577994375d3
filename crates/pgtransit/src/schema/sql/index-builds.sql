-- Indexes of the selected ordinary tables that the stream engine builds itself after the
-- load, several at a time: the index definition and, for a primary key or unique
-- constraint, the statement that attaches the built index as the constraint (cheaper than
-- ADD CONSTRAINT, which builds under an exclusive lock), and the replica identity setting
-- pg_dump would have emitted with it. Keys are the dump's "classid objid" of each entry.
SELECT 'pg_class'::regclass::oid || ' ' || i.indexrelid AS index_key,
       coalesce('pg_constraint'::regclass::oid || ' ' || k.oid, '') AS constraint_key,
       format('%I.%I', n.nspname, c.relname) AS table_name,
       format('%I.%I', n.nspname, ic.relname) AS index_name,
       k.conname AS constraint_name,
       pg_get_indexdef(i.indexrelid) AS create_index,
       CASE WHEN k.oid IS NOT NULL THEN
           format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s USING INDEX %I%s', n.nspname, c.relname, k.conname,
                  CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, ic.relname,
                  CASE WHEN k.condeferrable THEN ' DEFERRABLE' || CASE WHEN k.condeferred THEN ' INITIALLY DEFERRED' ELSE '' END
                       ELSE '' END)
       END AS attach,
       CASE WHEN i.indisreplident THEN
           format('ALTER TABLE ONLY %I.%I REPLICA IDENTITY USING INDEX %I', n.nspname, c.relname, coalesce(k.conname, ic.relname))
       END AS identity,
       pg_relation_size(c.oid)::bigint AS table_bytes
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = c.oid AND k.contype IN ('p', 'u')
WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relpersistence <> 't' AND (:selected) AND i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conindid = i.indexrelid AND x.contype NOT IN ('p', 'u'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY table_bytes DESC, index_name
