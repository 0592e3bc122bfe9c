# revenue_engine: PGXS build.  The install script is concatenated from the
# modules' SQL files in dependency order; the version comes from the control file.

EXTENSION    = revenue_engine
EXTVERSION   = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big   = revenue_engine
OBJS         = src/revenue_engine.o \
               src/http/http.o \
               src/outbox/outbox.o \
               src/outbox/delivery.o \
               src/worker/worker.o \
               src/usage/usage.o \
               src/usage/keyed_update.o \
               src/blasts/status.o \
               src/commit_counters.o \
               src/blasts/funnel.o \
               src/blasts/create_blast.o \
               src/usage/backfill.o \
               src/caller_query.o \
               src/tenancy/tenancy.o \
               src/tenancy/masking.o \
               src/citus/citus.o \
               src/campaigns/schedule.o \
               src/campaigns/template.o \
               src/campaigns/enroll.o \
               src/campaigns/runner.o \
               src/campaigns/counters.o

# campaigns: new in 0.2.0 as a whole, so the upgrade from 0.1.0 includes these
# files as they are (UPGRADE_IN below) instead of restating them.
CAMPAIGN_SQL = src/campaigns/schema.sql \
               src/campaigns/contacts.sql \
               src/campaigns/templates.sql \
               src/campaigns/definitions.sql \
               src/campaigns/enroll.sql \
               src/campaigns/runner.sql \
               src/campaigns/outcomes.sql \
               src/campaigns/views.sql \
               src/campaigns/schedule.sql

# Order matters: base objects, then the outbox, then the modules that write to it;
# tenancy's row level security after every table and view it covers.
MODULE_SQL   = src/revenue_engine.sql \
               src/tenancy/masking.sql \
               src/outbox/outbox.sql \
               src/outbox/delivery.sql \
               src/messaging/messaging.sql \
               src/usage/usage.sql \
               src/blasts/blasts.sql \
               $(CAMPAIGN_SQL) \
               src/tenancy/tenancy.sql \
               src/tenancy/tenant_forms.sql \
               src/citus/citus.sql \
               src/worker/worker.sql

# The upgrade script to this version is built from its hand-written part
# (upgrade/*.sql.in), where the line -- @CAMPAIGN_SQL@ stands for the
# campaigns module's files and a line -- @include FILE for that file (parts
# new in that version as a whole).  When a version is released, its built upgrade
# script is frozen into upgrade/ like the install script.
UPGRADE_IN   = $(wildcard upgrade/$(EXTENSION)--*.sql.in)
DATA_built   = $(EXTENSION)--$(EXTVERSION).sql $(UPGRADE_IN:.sql.in=.sql)
# Released install scripts, frozen as released, and released upgrade scripts.
DATA         = $(filter-out $(UPGRADE_IN:.sql.in=.sql),$(wildcard upgrade/$(EXTENSION)--*.sql))
EXTRA_CLEAN  = results test/output_iso tmp_check regression.diffs regression.out log

# libcurl's flags from curl-config (its own, not a guess of ours)
CURL_CONFIG ?= curl-config
PG_CPPFLAGS  = -I$(srcdir)/src $(shell $(CURL_CONFIG) --cflags)
SHLIB_LINK   = $(shell $(CURL_CONFIG) --libs) -lcrypto
# The version of the SQL objects the library is built for (see re_require_installed_version).
PG_CPPFLAGS += -DRE_EXTVERSION=\"$(EXTVERSION)\"
# Warnings are errors in the project's tests and CI (test/run.sh sets
# RE_WERROR=yes); a user building with a newer compiler gets warnings only.
PG_CFLAGS    = -std=gnu99 -Wall -Wextra -Wno-unused-parameter \
               -Wno-missing-field-initializers -Wno-sign-compare
ifeq ($(RE_WERROR),yes)
PG_CFLAGS   += -Werror
endif

# `make installcheck` runs pg_regress, the isolation tester and the TAP tests.
# pg_regress and the isolation tests run against the server PGHOST/PGPORT
# name, which must run with the settings of test/test.conf (README, Testing);
# the TAP tests start clusters of their own (PGXS's prove_installcheck).
REGRESS      = setup usage_response usage_ladder usage_goals_streaks \
               usage_timezones usage_bad_input usage_backfill usage_fastpath delivery_input security \
               tenants tenant_forms blasts status_webhook whatsapp_payloads \
               $(CAMPAIGN_REGRESS)
# Campaign tests: every sql/campaign_*.sql and test/specs/campaign_*.spec, in
# name order, each self-contained (after setup).
CAMPAIGN_REGRESS  = $(sort $(patsubst sql/%.sql,%,$(wildcard sql/campaign_*.sql)))
CAMPAIGN_ISOLATION = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/campaign_*.spec)))

ISOLATION    = usage_concurrent_milestones usage_concurrent_goal_feature usage_keyed_update \
               blasts_concurrent_status blasts_concurrent_funnel blasts_parking_race \
               blasts_funnel_serializable blasts_funnel_truncate blasts_funnel_columns \
               tenants_binding_cache $(CAMPAIGN_ISOLATION)
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso

TAP_TESTS    = 1
PROVE_TESTS ?= test/t/*.pl

# No JIT bitcode: nothing here gains from inlining, and it would need clang.
override with_llvm = no

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies here: a changed header rebuilds every object.
$(OBJS): $(wildcard src/*.h src/*/*.h) $(EXTENSION).control

$(EXTENSION)--$(EXTVERSION).sql: $(MODULE_SQL) $(EXTENSION).control
	cat $(MODULE_SQL) > $@

upgrade/%.sql: upgrade/%.sql.in $(MODULE_SQL)
	{ sed '/^-- @CAMPAIGN_SQL@$$/,$$d' $<; cat $(CAMPAIGN_SQL); sed '1,/^-- @CAMPAIGN_SQL@$$/d' $<; } | \
		awk '/^-- @include [^ ]+$$/ { f = $$3; while ((getline l < f) > 0) print l; close(f); next } { print }' > $@.tmp
	mv $@.tmp $@

.PHONY: test demo bench
print-%:
	@echo $($*)

test:
	bash test/run.sh

demo:
	bash scripts/demo.sh

bench:
	bash test/bench/run.sh
	bash test/bench/delivery.sh
	bash test/bench/endpoints.sh
	bash test/bench/blasts.sh
	bash test/bench/idle.sh
	bash test/bench/citus.sh
	bash test/bench/campaigns.sh
