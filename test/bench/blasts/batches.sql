-- (c) batches 0 (warm-up) .. :nbatches of :size statuses each on distinct
-- recipients from id :lo on, every status sent -> delivered: batch k's
-- WhatsApp Cloud API callback (body and signed headers) on the recipients
-- [lo, hi], and the same kind of statuses for the record_message_status
-- baseline on the next :size recipients.  Status items full (as WhatsApp
-- sends them) or minimal: :full.
CREATE TABLE bench.wa_batches (k int PRIMARY KEY, lo bigint, hi bigint, body text, headers jsonb);
CREATE TABLE bench.wa_statuses (k int, message_id text, status text, occurred_at timestamptz, raw jsonb);

INSERT INTO bench.wa_batches (k, lo, hi, body)
SELECT b.k, b.lo, b.lo + :size - 1,
       bench.wa_body((SELECT jsonb_agg(bench.wa_status(r.id, r.phone, 'delivered', now(), :full) ORDER BY r.id)
                        FROM revenue_engine.blast_recipients r
                       WHERE r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = :blast
                         AND r.id BETWEEN b.lo AND b.lo + :size - 1))
  FROM (SELECT k, :lo + 2 * k * :size AS lo FROM generate_series(0, :nbatches) k) b;
UPDATE bench.wa_batches SET headers = bench.wa_headers(body, :'secret');

INSERT INTO bench.wa_statuses (k, message_id, status, occurred_at, raw)
SELECT b.k, 'wamid.' || r.id, 'delivered', date_trunc('second', now()),
       bench.wa_status(r.id, r.phone, 'delivered', now(), :full)
  FROM bench.wa_batches b JOIN revenue_engine.blast_recipients r
    ON r.tenant_id = revenue_engine.current_tenant() AND r.blast_id = :blast
   AND r.id BETWEEN b.hi + 1 AND b.hi + :size;
CREATE INDEX ON bench.wa_statuses (k);
ANALYZE bench.wa_batches, bench.wa_statuses;
