-- pg_dump selection arguments, one per line: every schema that holds something this task
-- moves, every table in those schemas it does not move (with the serial sequences those
-- tables own: pg_dump dumps them as objects of their own), and the extensions in use
-- (pg_dump leaves extensions out once schemas are named).
WITH tables AS (
    SELECT n.nspname, c.relname, (:selected) AS selected
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
    UNION ALL
    -- A sequence owned by a column (serial: deptype a) goes with its table; identity
    -- sequences (deptype i) are part of their table's definition already.
    SELECT sn.nspname, s.relname, (:selected)
    FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE s.relkind = 'S'
), schemas AS (
    SELECT n.nspname FROM pg_namespace n WHERE (:selected_schema)
    UNION
    SELECT nspname FROM tables WHERE selected
    UNION
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname <> 'plpgsql' AND n.nspname NOT IN ('pg_catalog', 'public')
)
SELECT arg FROM (
    SELECT 1 AS ord, nspname AS k, '--schema="' || replace(nspname, '"', '""') || '"' AS arg FROM schemas
    UNION ALL
    SELECT 2, t.nspname || '.' || t.relname,
           '--exclude-table="' || replace(t.nspname, '"', '""') || '"."' || replace(t.relname, '"', '""') || '"'
    FROM tables t JOIN schemas s ON s.nspname = t.nspname WHERE NOT t.selected
    UNION ALL
    SELECT 3, extname, '--extension="' || replace(extname, '"', '""') || '"'
    FROM pg_extension WHERE extname <> 'plpgsql'
) a
ORDER BY ord, k
