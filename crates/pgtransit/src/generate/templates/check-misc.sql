-- Objects logical replication does not carry, in the selected schemas.
SELECT kind, name, note FROM (
    SELECT 'unlogged table' AS kind, format('%I.%I', n.nspname, c.relname) AS name, 'not published; copy by hand if needed' AS note
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.relpersistence = 'u' AND (:selected)
    UNION ALL
    SELECT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'foreign table' END, format('%I.%I', n.nspname, c.relname),
           CASE c.relkind WHEN 'm' THEN 'REFRESH MATERIALIZED VIEW on the target after the switch' ELSE 'its server and user mapping must exist on the target' END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('m', 'f') AND (:selected_schema)
    UNION ALL
    SELECT 'large objects', count(*)::text, 'not replicated: copy them at the switch (pg_dump --large-objects)'
    FROM pg_largeobject_metadata HAVING count(*) > 0
    UNION ALL
    SELECT 'event trigger', quote_ident(evtname), 'not copied by copy-schema; recreate on the target' FROM pg_event_trigger
    UNION ALL
    SELECT 'extension table', format('%I.%I', n.nspname, c.relname), 'filled by its extension on the target, not published'
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    WHERE c.relkind = 'r'
) x ORDER BY 1, 2;
