-- (psql) Which task pgtransit.owned_objects on the target gives the replication slot to;
-- no row when the slot has no mark or the target has no table of marks. drop-sub drops a
-- slot whose subscription is gone only when its mark is this task's (marks::owner).
SELECT to_regclass('pgtransit.owned_objects') IS NOT NULL AS has_marks \gset
\if :has_marks
SELECT task FROM pgtransit.owned_objects WHERE kind = 'slot' AND name = :'slot';
\endif
