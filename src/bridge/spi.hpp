/*
 * spi.hpp — SPI for C++: a scoped connection, statements prepared once per
 * backend (SPI_keepplan), typed access to results, identifier quoting.
 *
 * Every call that can ereport goes through pg_call, so errors arrive as
 * PgError exceptions and the scoped connection is closed on the way out.
 * Every statement is prepared and executed with search_path pinned to
 * pg_catalog, pg_temp in a GUC nest level rolled back afterwards (see
 * security.hpp): no SQL of ours runs with another search_path, except inside
 * a CallersSearchPath scope.
 * Values are always passed as parameters; identifiers are quoted with
 * PostgreSQL's own quote_identifier.
 */
#pragma once

#include "bridge/guard.hpp"

#include <initializer_list>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace pg_lifecycle::bridge {

/* SPI_connect for the lifetime of the object. */
class SpiConnection {
public:
    SpiConnection();
    ~SpiConnection();
    SpiConnection(const SpiConnection&) = delete;
    SpiConnection& operator=(const SpiConnection&) = delete;
};

/* A statement prepared on first use and kept for the life of the backend.
 * Declare them as function-local or file-level statics; the object is
 * trivially destructible. */
class Statement {
public:
    static constexpr int max_args = 16;

    constexpr Statement(const char* sql, std::initializer_list<Oid> types) : sql_(sql) {
        for (Oid t : types) types_[nargs_++] = t;
    }
    /* Execute with the given parameters (nulls[i] == 'n' for NULL, as SPI). */
    int execute(const Datum* values, const char* nulls, bool read_only, long count = 0);
    const char* sql() const { return sql_; }

private:
    const char* sql_;
    Oid types_[max_args] = {};
    int nargs_ = 0;
    SPIPlanPtr plan_ = nullptr;
};

/* Run SQL text without parameters (for DDL built from quoted identifiers). */
int execute_sql(const std::string& sql, bool read_only, long count = 0);
/* Run SQL text with parameters, planned once for this call. */
int execute_sql(const std::string& sql, int nargs, const Oid* types, const Datum* values, const char* nulls,
                bool read_only, long count = 0);

/* A plan for SQL text built at run time (quoted identifiers, values as
 * parameters), prepared once per distinct text, argument types and cursor
 * options and kept for the life of the backend.  Past 256 distinct
 * statements new ones are prepared without being kept (freed by SPI_finish):
 * a kept plan is never freed, since one may be executing further up the stack. */
SPIPlanPtr cached_plan(const std::string& sql, int nargs, const Oid* types, int cursor_options = 0);
/* Execute a plan made by cached_plan. */
int execute_plan(SPIPlanPtr plan, const Datum* values, const char* nulls, bool read_only, long count = 0);
/* Plan and run SQL text once with a snapshot taken now, which sees every
 * commit so far and this transaction's earlier commands (what catalog reads
 * and DDL-time scans need, also in a REPEATABLE READ transaction). */
int execute_fresh(const std::string& sql, int nargs, const Oid* types, const Datum* values, bool read_only,
                  long count = 0);
/* Execute cached_plan(sql, ...). */
int execute_cached(const std::string& sql, int nargs, const Oid* types, const Datum* values, const char* nulls,
                   bool read_only, long count = 0);

/* Run body in a subtransaction of the current transaction (SPI statements in
 * body use the caller's connection, or one body opens).  Returns true when
 * body completed (the subtransaction is released).  When body raised a
 * PostgreSQL error, the subtransaction is rolled back and `handled(error)`
 * decides: true, and false is returned; false, and the error propagates.  Any
 * other exception propagates (after the rollback). */
bool in_subtransaction(const std::function<void()>& body, const std::function<bool(const PgError&)>& handled);

/* Frees the last SPI command's result rows now rather than at the end of
 * the SPI connection (a loop of big results). */
void free_result();
/* A set-returning function's result: every row of the last SPI command,
 * materialized (its columns must be the function's OUT columns, in order).
 * Returns the (Datum)0 the function returns. */
Datum return_result_rows(FunctionCallInfo fcinfo);
/* Number of rows processed by the last SPI command. */
uint64 processed_rows();
/* Column `col` (1-based) of row `row` of the last SPI result. */
std::optional<Datum> result_datum(uint64 row, int col);
std::optional<int64> result_int64(uint64 row, int col);
std::optional<std::string> result_text(uint64 row, int col);
/* The same for a column that cannot be NULL (a key, a NOT NULL column, a
 * count): a NULL there raises an internal error (XX000) naming the column
 * instead of being read. */
Datum required_datum(uint64 row, int col);
int64 required_int64(uint64 row, int col);
std::string required_text(uint64 row, int col);

/* A text Datum in the current memory context. */
inline Datum text_datum(std::string_view s) {
    return pg_call([&] { return PointerGetDatum(cstring_to_text_with_len(s.data(), static_cast<int>(s.size()))); });
}

/* -1, 0 or 1 as the interval is negative, zero or positive (interval_cmp). */
inline int interval_sign(const Interval* iv) {
    return pg_call([iv] {
        Interval zero{};
        return DatumGetInt32(
            DirectFunctionCall2(interval_cmp, IntervalPGetDatum(const_cast<Interval*>(iv)), IntervalPGetDatum(&zero)));
    });
}

/* Identifier quoting through PostgreSQL's quote_identifier. */
std::string quote_ident(std::string_view ident);
/* "schema"."table" for a relation; throws 42P01 if it does not exist. */
std::string qualified_relation_name(Oid relid);

}  // namespace pg_lifecycle::bridge
