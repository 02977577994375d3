-- The post-data entries the apply needs before the data arrives, as "classid objid" pairs of
-- the dump's table of contents: primary keys, and the constraint or index serving as
-- REPLICA IDENTITY. They are restored with the tables; everything else post-data waits.
SELECT 'pg_constraint'::regclass::oid || ' ' || k.oid
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (:selected)
  AND (k.contype = 'p'
       OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = k.conindid AND i.indisreplident))
UNION ALL
SELECT 'pg_class'::regclass::oid || ' ' || i.indexrelid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (:selected) AND i.indisreplident
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
