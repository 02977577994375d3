-- Whether the publication exists on the source and which task created it (pgtransit marks
-- what it creates with a comment, so it never adopts or drops someone else's object).
SELECT p.pubname, coalesce(obj_description(p.oid, 'pg_publication'), '') AS owner_note
FROM pg_publication p WHERE p.pubname = :'pub'
