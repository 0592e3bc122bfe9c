-- Recipients :lo .. :hi of blast :blast get their provider message id
-- 'wamid.<id>' and status sent (an hour ago), as if the worker had sent them,
-- in one UPDATE statement (its own transaction, so the time printed includes
-- the commit, where the funnel trigger writes its sums).  With :off true the
-- funnel row trigger is disabled for the statement and the counters are then
-- corrected by exactly what it changed (a scan of the range before and
-- after): they stay exact either way.
\if :off
TRUNCATE bench.range_before;
INSERT INTO bench.range_before SELECT bench.scan_counters_json(:blast, :lo, :hi);
ALTER TABLE revenue_engine.blast_recipients DISABLE TRIGGER blast_recipients_funnel_update;
\endif
SELECT clock_timestamp() AS t0 \gset
UPDATE revenue_engine.blast_recipients
   SET provider_message_id = 'wamid.' || id, status = 'sent',
       sent_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'
 WHERE tenant_id = revenue_engine.current_tenant() AND blast_id = :blast AND id BETWEEN :lo AND :hi;
SELECT extract(epoch FROM clock_timestamp() - :'t0');
\if :off
BEGIN;
ALTER TABLE revenue_engine.blast_recipients ENABLE TRIGGER blast_recipients_funnel_update;
SELECT bench.add_to_counters(:blast, bench.counters_change(:blast, :lo, :hi, (SELECT j FROM bench.range_before))) \g /dev/null
COMMIT;
\endif
