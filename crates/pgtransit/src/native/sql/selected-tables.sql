-- The tables this task moves, one row each: kind, persistence, whether an extension owns it
-- and whether it is replicated through a selected partitioned parent.
SELECT c.oid AS relid, n.nspname, c.relname, c.relkind::text AS relkind,
       c.relpersistence::text AS persistence, c.relispartition AS is_partition,
       EXISTS (SELECT 1 FROM pg_depend d
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') AS extension_member
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND (:selected)
ORDER BY n.nspname, c.relname
