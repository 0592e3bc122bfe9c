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

# The PostgreSQL majors META.json and the README name are those test/run.sh
# tests, and META.json's requirement spans them.
my @tested = @{ $meta->{x_tested_postgresql} // [] };
my $run = slurp_file("$root/test/run.sh");
my ($majors) = $run =~ /RE_PG_MAJORS:-([0-9 ]+)\}/;
ok(defined $majors, 'test/run.sh has default majors');
is(join(' ', @tested), $majors // '', 'META.json names the majors test/run.sh tests');
my $range = $meta->{prereqs}{runtime}{requires}{PostgreSQL} // '';
my ($lo, $hi) = $range =~ /^>= (\d+)\.0\.0, < (\d+)\.0\.0$/;
is($lo, $tested[0], 'META.json requires at least the oldest major tested');
is($hi, $tested[-1] + 1, 'META.json requires at most the newest major tested');
my $readme = slurp_file("$root/README.md");
my $listed = join(', ', @tested[0 .. $#tested - 1]) . " or $tested[-1]";
like($readme, qr/PostgreSQL \Q$listed\E \(the versions the test suite runs on\)/,
	"README's requirements name the majors tested ($listed)");

# Every module's SQL goes into the install script, in the Makefile's order.
my $makefile = slurp_file("$root/Makefile");
# a variable's list of words, with the variables it names expanded
sub make_list
{
	my ($name) = @_;
	my ($list) = $makefile =~ /^\Q$name\E\s*=\s*((?:.*\\\n)*.*)$/m;
	die "Makefile sets no $name" unless defined $list;
	return map { /^\$\((\w+)\)$/ ? make_list($1) : $_ } grep { length } split /[\s\\]+/, $list;
}
my @files = make_list('MODULE_SQL');
ok(scalar(@files) >= 3, 'Makefile lists the modules\' SQL files');
ok(-f "$root/$_", "$_ exists") foreach @files;

done_testing();
