-- Statements that create, on the target, every schema the dump fills (the dump's own
-- CREATE SCHEMA entries are left out: `public` and re-runs would stop the load).
SELECT format('CREATE SCHEMA IF NOT EXISTS %I;', nspname)
FROM (
    SELECT n.nspname FROM pg_namespace n WHERE (:selected_schema)
    UNION
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND (:selected)
    UNION
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname <> 'plpgsql' AND n.nspname NOT IN ('pg_catalog', 'public')
) s
ORDER BY nspname
