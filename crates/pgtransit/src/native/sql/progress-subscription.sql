-- The subscription :'sub' as a whole (run on the target): enabled, the last LSN the apply
-- worker reported, seconds since the source last sent anything, and (15+) error counters.
SELECT s.subenabled AS enabled,
       (SELECT max(latest_end_lsn)::text FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.relid IS NULL) AS latest_end_lsn,
       (SELECT extract(epoch FROM now() - max(last_msg_receipt_time))::float8 FROM pg_stat_subscription st
         WHERE st.subid = s.oid AND st.relid IS NULL) AS receipt_age_s,
       CASE WHEN current_setting('server_version_num')::int >= 150000
            THEN (xpath('/row/e/text()', query_to_xml(format(
                   'SELECT apply_error_count + sync_error_count AS e FROM pg_stat_subscription_stats WHERE subid = %s', s.oid),
                   false, true, '')))[1]::text::bigint END AS errors
FROM pg_subscription s
WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
