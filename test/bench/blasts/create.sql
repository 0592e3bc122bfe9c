-- A channel no send can reach, its WhatsApp status callbacks signed with the
-- app secret :'secret', and one blast of :recipients recipients due in 30
-- days (the worker sends nothing).  Prints "blast_id first_id last_id".
SELECT revenue_engine.create_channel('wa', 'https://unreachable.invalid/v19.0/123/messages',
                                     body_template => '{"messaging_product": "whatsapp"}',
                                     message_id_path => '{messages,0,id}') \g /dev/null
SELECT revenue_engine.set_channel_status_source('wa', webhook_kind => 'whatsapp',
                                                webhook_secret => :'secret') \g /dev/null
SELECT blast_id FROM revenue_engine.create_blast(
         'wa', 'bench',
         recipients_query => pg_catalog.format(
           $$SELECT '+1' || (2000000000 + g)::text AS phone, 'Customer ' || g AS name FROM generate_series(1, %s) g$$,
           :recipients),
         message => 'Hello {{name}}, our sale starts today',
         scheduled_for => now() + interval '30 days') \gset
SELECT :blast_id, min(id), max(id) FROM revenue_engine.blast_recipients
 WHERE tenant_id = revenue_engine.current_tenant() AND blast_id = :blast_id;
