SELECT revenue_engine.enqueue_event(gen_random_uuid(), 'bench_event', jsonb_build_object('t', extract(epoch FROM clock_timestamp())));
