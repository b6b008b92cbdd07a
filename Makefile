# pg_lifecycle — PGXS build, plus the project's own commands:
#   make test    install what is missing, build, install, run every test suite
#                (PG=N: against PostgreSQL N, in a cached Debian chroot when
#                this machine has no package of it — test/versions.sh)
#   make demo    install what is missing, build, install, walk through the features
#   make bench   benchmarks against the baselines in SPEC.md (not part of make test)
#   make test-model-long   the soft delete model test (test/t/041_softdelete_model.pl)
#                at length: SD_MODEL_ROUNDS (default 300) random schemas of
#                SD_MODEL_STEPS (60) steps, SD_MODEL_SEED to repeat a run

EXTENSION   = pg_lifecycle
MODULE_big  = pg_lifecycle
SOURCES     = $(sort $(wildcard src/*.cpp src/*/*.cpp))
OBJS        = $(SOURCES:.cpp=.o)
# Each version's install script is built from one part per capability
# (src/sql/<version>/NN_<capability>.sql); a released version's parts never
# change.  Upgrade scripts are src/sql/pg_lifecycle--X--Y.sql.
EXTVERSION  = 0.2
VERSIONS    = 0.1 0.2
DATA_built  = $(foreach v,$(VERSIONS),pg_lifecycle--$(v).sql)
DATA        = $(sort $(wildcard src/sql/pg_lifecycle--*--*.sql))

# make installcheck: the pg_regress, isolation and TAP suites, after `make
# install`, each on clusters of its own (pg_regress --temp-instance with
# test/pg_lifecycle.conf; the TAP tests start theirs), so a server that runs
# here is neither needed nor touched.  PostgreSQL refuses to run as root: as
# root it runs as the postgres OS user, in a copy of the tree that user owns
# (test/as_postgres.sh).  make test runs the same targets (test/run.sh).
REGRESS        = $(sort $(notdir $(basename $(wildcard sql/*.sql))))
REGRESS_OPTS   = --inputdir=. --temp-instance=./tmp_check \
                 --temp-config=test/pg_lifecycle.conf --temp-config=$(SELFTEST_CONF)
ISOLATION      = $(sort $(notdir $(basename $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --temp-instance=./tmp_check_iso \
                 --temp-config=test/pg_lifecycle.conf --temp-config=$(SELFTEST_CONF)
TAP_TESTS      = 1
PROVE_TESTS    = $(wildcard test/t/*.pl)
REGRESS_PREP   = selftest
ifeq ($(shell id -u),0)
NO_INSTALLCHECK = 1
endif

# The bridge's test library (test/selftest/selftest.cpp with the bridge's
# objects): built for the tests and loaded by them only, through the
# dynamic_library_path that test/selftest/selftest.conf gives their clusters;
# never installed.
SELFTEST_LIB  = test/selftest/pg_lifecycle_selftest$(DLSUFFIX)
SELFTEST_OBJS = test/selftest/selftest.o $(filter src/bridge/%,$(OBJS))
SELFTEST_CONF = test/selftest/selftest.conf

# Before PGXS: its clean rule is written only if EXTRA_CLEAN is set by then.
EXTRA_CLEAN = $(OBJS:.o=.d) test/selftest/selftest.o test/selftest/selftest.d $(SELFTEST_LIB) $(SELFTEST_CONF)

PG_CPPFLAGS += -I$(srcdir)/src
PG_CXXFLAGS += -std=c++20 -Wno-register -Wno-missing-field-initializers -fvisibility-inlines-hidden
# Header dependencies (src/x/y.d next to each object), so a changed header rebuilds what uses it.
PG_CXXFLAGS += -MMD -MP
# GCC 16.2's code sinking moved the restoring store of a scope guard's
# destructor off an exception landing pad (a global nesting depth was never
# put back after an error; see LegacyRestoreScope in src/softdelete/triggers.cpp).
# Our scope guards restore globals on exactly those paths, so GCC does not sink
# code here (a compiler without the option does not get it).
PG_CXXFLAGS += $(shell $(CXX) -fno-tree-sink -E -x c++ /dev/null >/dev/null 2>&1 && echo -fno-tree-sink)
SHLIB_LINK  += -lstdc++ -lfmt
# PGXS's bitcode rule ignores PG_CXXFLAGS, and JIT-inlining C++ buys nothing.
override with_llvm = no

# Which PostgreSQL: PG_CONFIG if set; PG=N picks /usr/lib/postgresql/N; else
# pg_config from the PATH, else the newest /usr/lib/postgresql/*/bin/pg_config
# (the same order as test/pg_config.sh).
ifeq ($(origin PG_CONFIG),undefined)
ifneq ($(PG),)
PG_CONFIG := /usr/lib/postgresql/$(PG)/bin/pg_config
else
PG_CONFIG := $(or $(shell command -v pg_config 2>/dev/null),$(lastword $(shell ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V)),pg_config)
endif
endif
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
-include $(OBJS:.o=.d) test/selftest/selftest.d
else
all install:
	@echo "PostgreSQL server headers (PGXS) not found through '$(PG_CONFIG)': set PG_CONFIG, or run 'make test' or 'make demo' (they install them)" >&2; exit 1
endif

# Rebuilt every time: a part that was removed or renamed must not linger.
pg_lifecycle--%.sql: FORCE
	cat $(sort $(wildcard src/sql/$*/*.sql)) > $@
FORCE:

.PHONY: selftest
selftest: $(SELFTEST_LIB) $(SELFTEST_CONF)
$(SELFTEST_LIB): $(SELFTEST_OBJS)
	$(CXX) $(CXXFLAGS) $(SELFTEST_OBJS) $(LDFLAGS) $(LDFLAGS_SL) -shared -o $@ $(SHLIB_LINK)
$(SELFTEST_CONF): FORCE
	echo "dynamic_library_path = '\$$libdir:$(abspath test/selftest)'" > $@

ifeq ($(shell id -u),0)
installcheck: selftest
	bash test/as_postgres.sh $(MAKE) PG_CONFIG=$(PG_CONFIG) installcheck
endif

.PHONY: test test-model-long demo bench deps FORCE
deps:
	bash test/deps.sh
test:
ifeq ($(PG),)
	bash test/run.sh
else
	bash test/versions.sh $(PG)
endif
test-model-long:
	SUITES=tap TAP_TESTS=041_softdelete_model.pl SD_MODEL_ROUNDS=$${SD_MODEL_ROUNDS:-300} \
	SD_MODEL_STEPS=$${SD_MODEL_STEPS:-60} bash $(if $(PG),test/versions.sh $(PG),test/run.sh)
demo:
	bash test/demo.sh
bench:
	bash bench/run.sh

# Soft delete (and what else is done) on a real Citus cluster, built once from
# ../shared/vendor/citus-*.tar.gz into /var/cache/pg_lifecycle/citus (test/citus.sh).
.PHONY: test-citus
test-citus:
	bash test/citus.sh
