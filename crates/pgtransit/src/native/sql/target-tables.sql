-- Selected tables that already exist on the target, and whether they hold rows (an exact
-- check per table, not the planner's estimate). Run on the target before the schema load:
-- a table with rows is never dropped or overwritten unless told to.
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       (xpath('/row/x/text()',
              query_to_xml(format('SELECT EXISTS (SELECT 1 FROM %I.%I) AS x', n.nspname, c.relname),
                           false, true, '')))[1]::text::boolean AS has_rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND (:selected)
ORDER BY 1
