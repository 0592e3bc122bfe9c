# Compares the extension objects of two databases, object by object, from
# `pg_dump --schema-only --binary-upgrade` (the only pg_dump mode that prints
# an extension's member objects, with their ACLs, comments and membership).
# The binary-upgrade plumbing (OIDs, relfilenodes, relfrozenxid, attribute
# missing values, dropped columns) is stripped: what remains is the schema a
# user sees.  Used by test/t/040_upgrade.pl; also runnable by hand:
#   perl test/lib/SchemaDiff.pm upgraded.sql fresh.sql
package SchemaDiff;
use strict;
use warnings;

# dump text -> (ordered list of keys, hash key -> normalized text)
sub objects
{
	my ($text) = @_;
	my @lines = split /\n/, $text;
	my (@out, $skip_until_semicolon);
	for (my $i = 0; $i < @lines; $i++)
	{
		my $l = $lines[$i];
		if ($skip_until_semicolon)
		{
			$skip_until_semicolon = 0 if $l =~ /;\s*$/;
			next;
		}
		next if $l =~ /^\\(un)?restrict /;
		next if $l =~ /^-- (Dumped (from|by)|set missing value\.|PostgreSQL database dump)/;
		next if $l =~ /^SET default_(tablespace|table_access_method) = /;
		# binary-upgrade statements spanning lines: relfrozenxid and dropped columns
		if ($l =~ /^-- For binary upgrade, (set (heap|toast)'s relfrozenxid|recreate dropped column)/)
		{
			# the UPDATE (and for a dropped column the ALTER TABLE ... DROP COLUMN) that follow
			my $n = ($l =~ /dropped column/) ? 2 : 1;
			while ($n > 0 && $i + 1 < @lines)
			{
				$i++;
				$n-- if $lines[$i] =~ /;\s*$/;
			}
			next;
		}
		next if $l =~ /^-- For binary upgrade,/;
		next if $l =~ /^SELECT pg_catalog\.binary_upgrade_(set_next_|set_missing_value|create_empty_extension)/;
		next if $l =~ /^DROP EXTENSION IF EXISTS /;
		next if $l =~ /pg\.dropped\.\d+/;
		push @out, $l;
	}

	# split into objects at pg_dump's "-- Name: ...; Type: ...; Schema: ...; Owner: ..." headers
	my (@keys, %obj);
	my $key = '(preamble)';
	push @keys, $key;
	for (my $i = 0; $i < @out; $i++)
	{
		if ($out[$i] eq '--' && $i + 2 < @out && $out[$i + 1] =~ /^-- Name: (.*)$/ && $out[$i + 2] eq '--')
		{
			$key = $1;
			$key =~ s/; Owner: .*$//;
			$key .= ' #' . (1 + grep { /^\Q$key\E( #\d+)?$/ } @keys) if exists $obj{$key};
			push @keys, $key;
			$i += 2;
			next;
		}
		$obj{$key} .= "$out[$i]\n";
	}
	# a sequence's current value is data, not schema
	@keys = grep { !/; Type: SEQUENCE SET;/ } @keys;
	delete $obj{$_} for grep { /; Type: SEQUENCE SET;/ } keys %obj;
	for my $k (keys %obj)
	{
		my $t = $obj{$k};
		# a dropped column removed from a column list leaves a comma before ");"
		$t =~ s/,(\n\);)/$1/g;
		$t =~ s/\n{2,}/\n/g;
		$t =~ s/^\n+|\n+$//g;
		$obj{$k} = "$t\n";
	}
	return (\@keys, \%obj);
}

# two dump texts -> '' when equal, else a report naming each object that
# differs, with a unified diff of that object
sub compare
{
	my ($got_text, $want_text, $got_name, $want_name) = @_;
	$got_name  //= 'upgraded';
	$want_name //= 'fresh';
	my ($gk, $g) = objects($got_text);
	my ($wk, $w) = objects($want_text);
	my @report;
	for my $k (@$wk)
	{
		push @report, "missing in $got_name: $k\n$w->{$k}" unless exists $g->{$k};
	}
	for my $k (@$gk)
	{
		push @report, "only in $got_name (not in $want_name): $k\n$g->{$k}" unless exists $w->{$k};
	}
	for my $k (@$wk)
	{
		next unless exists $g->{$k} && $g->{$k} ne $w->{$k};
		push @report, "differs: $k\n" . udiff($g->{$k}, $w->{$k}, $got_name, $want_name);
	}
	return join("\n", @report);
}

sub udiff
{
	my ($a, $b, $an, $bn) = @_;
	require File::Temp;
	my $fa = File::Temp->new;
	my $fb = File::Temp->new;
	print $fa $a;
	print $fb $b;
	close $fa;
	close $fb;
	my $d = `diff -u --label '$an' --label '$bn' '$fa' '$fb'`;
	return $d;
}

unless (caller)
{
	local $/;
	open my $f1, '<', $ARGV[0] or die "$ARGV[0]: $!";
	open my $f2, '<', $ARGV[1] or die "$ARGV[1]: $!";
	my $r = compare(scalar <$f1>, scalar <$f2>, $ARGV[0], $ARGV[1]);
	print $r;
	exit($r eq '' ? 0 : 1);
}

1;
