/*
 * selftest.cpp — functions that exercise the bridge from SQL, in a library of
 * their own for the tests: pg_lifecycle_selftest.so (this file and the
 * bridge's objects), built by `make installcheck` (and so by `make test`),
 * never installed and never part of pg_lifecycle.so.
 *
 * The tests load it through dynamic_library_path (test/selftest/selftest.conf,
 * written by the Makefile) and create its functions by hand, as a superuser:
 * sql/bridge.sql, test/isolation/specs/bridge_errors.spec and
 * test/t/001_bridge.pl prove that errors cross the C++/PostgreSQL boundary in
 * both directions with the right SQLSTATE, that C++ destructors run on the
 * way, and that the backend survives.
 */
#include "bridge/function.hpp"
#include "bridge/memory.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"

#include <stdexcept>

extern "C" {
PG_MODULE_MAGIC;
}

namespace {

/* Counts live instances so SQL can check that destructors ran. */
int live_trackers = 0;
struct Tracker {
    Tracker() { ++live_trackers; }
    ~Tracker() { --live_trackers; }
    Tracker(const Tracker&) = delete;
    Tracker& operator=(const Tracker&) = delete;
};

using namespace pg_lifecycle;
using namespace pg_lifecycle::bridge;

}  // namespace

/* pg_lifecycle_selftest_raise(kind text, arg text) RETURNS text */
LIFECYCLE_FUNCTION(pg_lifecycle_selftest_raise) {
    require_arg(fcinfo, 0, "kind");
    std::string kind = text_arg(fcinfo, 0);
    std::string arg = PG_ARGISNULL(1) ? std::string() : text_arg(fcinfo, 1);
    Tracker tracker;               // must be destroyed whatever happens below
    std::string owned(1000, 'x');  // heap memory owned by this frame

    if (kind == "cpp") {
        throw Error(sqlstate::invalid_parameter_value, "selftest: bad value \"" + arg + "\"", "raised by C++ code",
                    "pass a good value");
    } else if (kind == "std") {
        throw std::runtime_error("selftest: std::runtime_error");
    } else if (kind == "bad_alloc") {
        throw std::bad_alloc();
    } else if (kind == "unknown") {
        throw 42;
    } else if (kind == "pg") {
        /* PostgreSQL's own error from a PG call inside guarded C++ code. */
        Datum d = pg_call([&] { return DirectFunctionCall1(int4in, CStringGetDatum(arg.c_str())); });
        return text_datum(fmt::format("int4 {}", DatumGetInt32(d)));
    } else if (kind == "spi") {
        /* PostgreSQL error from SQL run through SPI while C++ objects are alive. */
        SpiConnection spi;
        CallersSearchPath callers; /* the caller's own SQL, with the caller's names */
        execute_sql(arg, false);
        return text_datum(fmt::format("{} rows", processed_rows()));
    } else if (kind == "spi_param") {
        /* A prepared, kept statement with a parameter. */
        static Statement stmt("SELECT $1::int * 2", {TEXTOID});
        SpiConnection spi;
        Datum v = text_datum(arg);
        stmt.execute(&v, nullptr, true, 1);
        return text_datum(fmt::format("{}", result_int64(0, 1).value_or(-1)));
    } else if (kind == "vector") {
        /* Boost.Container over palloc: sum 0..n-1. */
        long n = std::stol(arg);
        pvector<int64> v;
        for (long i = 0; i < n; ++i) v.push_back(i);
        int64 sum = 0;
        for (int64 x : v) sum += x;
        return text_datum(fmt::format("{}", sum));
    } else if (kind == "huge") {
        /* An allocation PostgreSQL refuses: std::bad_alloc, not a crash. */
        pvector<char> v;
        v.reserve(static_cast<size_t>(1) << 62);
        return text_datum("unreachable");
    } else if (kind == "spin") {
        /* Loops until cancelled (statement_timeout): the cancel arrives as a
         * PgError and unwinds this frame. */
        for (;;) check_for_interrupts();
    } else if (kind == "quote") {
        return text_datum(quote_ident(arg));
    }
    throw Error(sqlstate::invalid_parameter_value, fmt::format("unknown selftest kind \"{}\"", kind), {},
                "use cpp, std, bad_alloc, unknown, pg, spi, spi_param, vector, huge, spin or quote");
}

/* pg_lifecycle_selftest_live() RETURNS int: Tracker objects still alive. */
LIFECYCLE_FUNCTION(pg_lifecycle_selftest_live) {
    (void)fcinfo;
    return Int32GetDatum(live_trackers);
}
