# META.json, the control file and the install script agree on the version.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';
my $control = slurp_file("$root/revenue_engine.control");
my ($version) = $control =~ /^default_version\s*=\s*'([^']+)'/m;
ok(defined $version, 'control file has a default_version');

my $meta = decode_json(slurp_file("$root/META.json"));
is($meta->{version}, $version, 'META.json version equals the control file');
is($meta->{provides}{revenue_engine}{version}, $version,
	'META.json provides the same version');
like($control, qr/^schema\s*=\s*revenue_engine$/m, 'control file pins schema revenue_engine');
like($control, qr/^relocatable\s*=\s*false$/m, 'extension is not relocatable');

# Every module's SQL goes into the install script, in the Makefile's order.
my $makefile = slurp_file("$root/Makefile");
my ($list) = $makefile =~ /^MODULE_SQL\s*=\s*((?:.*\\\n)*.*)$/m;
my @files = grep { length } split /[\s\\]+/, $list;
ok(scalar(@files) >= 3, 'Makefile lists the modules\' SQL files');
ok(-f "$root/$_", "$_ exists") foreach @files;

done_testing();
