# Polling for providers without callbacks: the worker GETs the channel's
# status URL for recipients not yet final, maps the answer through the
# channel's status_map, records changes with source polling, within the
# channel's rate limit, and stops polling a recipient once it is final.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = PostgreSQL::Test::Utils::tempdir;

# A provider with a send API and a status API.  A message's status moves on
# at each poll: accepted -> DELIVERED -> SEEN; message "m-3" answers 500 to
# polls, "m-4" answers garbage; every poll is logged.
my $server = <<'PY';
import http.server, json, sys, threading
counts, lock, n = {}, threading.Lock(), [0]
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self, code, body):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            n[0] += 1
            # the fifth id holds characters a URL path must escape
            mid = "m-5/x=y" if n[0] == 5 else "m-%d" % n[0]
        self.answer(200, json.dumps({"messages": [{"id": mid}]}))
    def do_GET(self):
        mid = self.path.rsplit("/", 1)[-1]
        with lock:
            k = counts.get(mid, 0)
            counts[mid] = k + 1
        log.write("%s\n" % mid)
        if mid == "m-3":
            return self.answer(500, "{}")
        if mid == "m-4":
            return self.answer(200, "not json")
        state = ["accepted", "DELIVERED", "SEEN"][min(k, 2)]
        self.answer(200, json.dumps({"data": {"state": state}}))
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
open(my $fh, '>', "$tmp/provider.py") or die;
print $fh $server;
close $fh;
my $srv = IPC::Run::start([ 'python3', "$tmp/provider.py", "$tmp/port", "$tmp/polls.log" ],
	'<', \undef, '>', "$tmp/srv.out", '2>', "$tmp/srv.err");
END { my $rc = $?; eval { $srv->kill_kill(grace => 5) } if $srv; $? = $rc; }
for (1 .. 600) { last if -s "$tmp/port"; usleep(50_000); }
chomp(my $port = slurp_file("$tmp/port"));

my $node = PostgreSQL::Test::Cluster->new('polling');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'revenue_engine'
revenue_engine.http_allow_private = on
});
$node->start;
$node->safe_psql('postgres', qq{
CREATE EXTENSION revenue_engine;
SELECT revenue_engine.create_channel('sms', 'http://127.0.0.1:$port/send',
         message_id_path => '{messages,0,id}', rate_limit => 20);
SELECT revenue_engine.set_channel_status_source('sms',
         status_url => 'http://127.0.0.1:$port/status/{message_id}',
         status_path => '{data,state}',
         status_map => '{"accepted": "pending", "DELIVERED": "delivered", "SEEN": "read"}',
         poll_interval => '1 second');
SELECT blast_id FROM revenue_engine.create_blast('sms', 'poll-test',
         '["+14155550101", "+14155550102", "+14155550103", "+14155550104", "+14155550105"]',
         message => 'hello');
});

ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 3 FROM revenue_engine.blast_recipients WHERE status = 'read'}),
	'three recipients reached read by polling alone');
is($node->safe_psql('postgres', q{
	SELECT string_agg(provider_message_id || ':' || status, ',' ORDER BY provider_message_id)
	  FROM revenue_engine.blast_recipients}),
	'm-1:read,m-2:read,m-3:sent,m-4:sent,m-5/x=y:read',
	'a failing poll and a garbage answer leave their recipients at sent');
is($node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT old_status || '>' || new_status, ',')
	  FROM revenue_engine.status_history WHERE source = 'polling'}),
	'delivered>read,sent>delivered', 'polling recorded each step with source polling');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM revenue_engine.status_history WHERE source = 'polling'}),
	'6', 'one history row per change: two per polled recipient');
is($node->safe_psql('postgres', q{
	SELECT string_agg(message_id, ',' ORDER BY message_id) FROM revenue_engine.poll_queue}),
	'm-3,m-4', 'final recipients are no longer polled');

like(slurp_file("$tmp/polls.log"), qr/^m-5%2Fx%3Dy\n/m,
	'the message id is percent-encoded into the status URL');

# Polled again later (a second apart), and no more than that.
my $before = () = slurp_file("$tmp/polls.log") =~ /^m-3$/mg;
sleep 3;
my $after = () = slurp_file("$tmp/polls.log") =~ /^m-3$/mg;
cmp_ok($after - $before, '>=', 1, 'a failing recipient is polled again');
cmp_ok($after - $before, '<=', 5, 'at most about once per poll_interval');
my $final_polls = () = slurp_file("$tmp/polls.log") =~ /^m-1$/mg;
is($final_polls, 3, 'a recipient is polled until it is final, then no more');

# poll_max_age: old recipients leave the queue at maintenance.
$node->safe_psql('postgres', q{
	SELECT revenue_engine.set_channel_status_source('sms',
	         status_url => (SELECT status_url FROM revenue_engine.channels WHERE name = 'sms'),
	         status_path => '{data,state}', poll_interval => '1 second', poll_max_age => '1 second')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM revenue_engine.poll_queue}),
	'recipients older than poll_max_age are no longer polled');

$node->stop;
done_testing();
