/*
 * spi.cpp — SPI helpers (see spi.hpp).
 */
#include "bridge/spi.hpp"

#include "bridge/security.hpp"

#include <algorithm>
#include <functional>

namespace pg_lifecycle::bridge {

SpiConnection::SpiConnection() {
    int rc = pg_call([] { return SPI_connect(); });
    if (rc != SPI_OK_CONNECT) {
        throw Error(sqlstate::internal_error, fmt::format("SPI_connect failed: {}", SPI_result_code_string(rc)));
    }
}

SpiConnection::~SpiConnection() {
    /* SPI_finish only pops SPI's stack; on an error path the transaction
     * abort that follows would clean it up anyway. */
    SPI_finish();
}

bool in_subtransaction(const std::function<void()>& body, const std::function<bool(const PgError&)>& handled) {
    MemoryContext cxt = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    auto end = [cxt, owner](bool commit) {
        pg_call([cxt, owner, commit] {
            if (commit) {
                ReleaseCurrentSubTransaction();
            } else {
                RollbackAndReleaseCurrentSubTransaction();
            }
            MemoryContextSwitchTo(cxt);
            CurrentResourceOwner = owner;
        });
    };
    pg_call([cxt] {
        BeginInternalSubTransaction(nullptr);
        MemoryContextSwitchTo(cxt);
    });
    try {
        body();
    } catch (const PgError& e) {
        /* Its ErrorData is in the top transaction's memory: it survives the rollback. */
        end(false);
        if (handled(e)) return false;
        throw;
    } catch (...) {
        end(false);
        throw;
    }
    end(true);
    return true;
}

static void check_rc(int rc, const char* sql) {
    if (rc < 0) {
        throw Error(sqlstate::internal_error, fmt::format("SPI failed: {}", SPI_result_code_string(rc)),
                    fmt::format("statement: {}", sql));
    }
}

int Statement::execute(const Datum* values, const char* nulls, bool read_only, long count) {
    StatementScope scope;
    if (plan_ == nullptr) {
        plan_ = pg_call([this] {
            SPIPlanPtr p = SPI_prepare(sql_, nargs_, types_);
            if (p == nullptr) {
                elog(ERROR, "pg_lifecycle: SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result), sql_);
            }
            if (SPI_keepplan(p) != 0) elog(ERROR, "pg_lifecycle: SPI_keepplan failed");
            return p;
        });
    }
    int rc = pg_call([&] { return SPI_execute_plan(plan_, const_cast<Datum*>(values), nulls, read_only, count); });
    check_rc(rc, sql_);
    return rc;
}

int execute_sql(const std::string& sql, bool read_only, long count) {
    StatementScope scope;
    int rc = pg_call([&] { return SPI_execute(sql.c_str(), read_only, count); });
    check_rc(rc, sql.c_str());
    return rc;
}

int execute_sql(const std::string& sql, int nargs, const Oid* types, const Datum* values, const char* nulls,
                bool read_only, long count) {
    StatementScope scope;
    int rc = pg_call([&] {
        return SPI_execute_with_args(sql.c_str(), nargs, const_cast<Oid*>(types), const_cast<Datum*>(values), nulls,
                                     read_only, count);
    });
    check_rc(rc, sql.c_str());
    return rc;
}

namespace {

struct CachedPlan {
    size_t hash;
    const char* sql; /* in TopMemoryContext */
    int nargs;
    int options;
    Oid types[Statement::max_args];
    SPIPlanPtr plan;
};

constexpr int max_cached_plans = 256;
CachedPlan* plan_cache = nullptr; /* TopMemoryContext, trivially destructible */
int n_cached_plans = 0;

}  // namespace

SPIPlanPtr cached_plan(const std::string& sql, int nargs, const Oid* types, int cursor_options) {
    if (nargs > Statement::max_args) throw Error(sqlstate::internal_error, "pg_lifecycle: too many SPI arguments");
    size_t hash = std::hash<std::string>{}(sql);
    for (int i = 0; i < n_cached_plans; ++i) {
        const CachedPlan& p = plan_cache[i];
        if (p.hash == hash && p.nargs == nargs && p.options == cursor_options &&
            std::equal(types, types + nargs, p.types) && sql == p.sql) {
            return p.plan;
        }
    }
    bool keep = n_cached_plans < max_cached_plans;
    StatementScope scope;
    SPIPlanPtr plan = pg_call([&] {
        SPIPlanPtr p = SPI_prepare_cursor(sql.c_str(), nargs, const_cast<Oid*>(types), cursor_options);
        if (p == nullptr) {
            elog(ERROR, "pg_lifecycle: SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result),
                 sql.c_str());
        }
        if (keep && SPI_keepplan(p) != 0) elog(ERROR, "pg_lifecycle: SPI_keepplan failed");
        return p;
    });
    if (!keep) return plan;
    pg_call([&] {
        if (plan_cache == nullptr) {
            plan_cache = static_cast<CachedPlan*>(
                MemoryContextAllocZero(TopMemoryContext, sizeof(CachedPlan) * max_cached_plans));
        }
        CachedPlan& slot = plan_cache[n_cached_plans];
        slot.hash = hash;
        slot.sql = MemoryContextStrdup(TopMemoryContext, sql.c_str());
        slot.nargs = nargs;
        slot.options = cursor_options;
        std::copy(types, types + nargs, slot.types);
        slot.plan = plan;
        ++n_cached_plans;
    });
    return plan;
}

int execute_cached(const std::string& sql, int nargs, const Oid* types, const Datum* values, const char* nulls,
                   bool read_only, long count) {
    SPIPlanPtr plan = cached_plan(sql, nargs, types);
    return execute_plan(plan, values, nulls, read_only, count);
}

int execute_plan(SPIPlanPtr plan, const Datum* values, const char* nulls, bool read_only, long count) {
    StatementScope scope;
    int rc = pg_call([&] { return SPI_execute_plan(plan, const_cast<Datum*>(values), nulls, read_only, count); });
    check_rc(rc, "a prepared statement");
    return rc;
}

int execute_fresh(const std::string& sql, int nargs, const Oid* types, const Datum* values, bool read_only,
                  long count) {
    StatementScope scope;
    int rc = pg_call([&] {
        SPIPlanPtr plan = SPI_prepare(sql.c_str(), nargs, const_cast<Oid*>(types));
        if (plan == nullptr) {
            elog(ERROR, "pg_lifecycle: SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result),
                 sql.c_str());
        }
        int r = SPI_execute_snapshot(plan, const_cast<Datum*>(values), nullptr, GetLatestSnapshot(), InvalidSnapshot,
                                     read_only, false, count);
        SPI_freeplan(plan);
        return r;
    });
    check_rc(rc, sql.c_str());
    return rc;
}

void free_result() {
    pg_call([] {
        SPI_freetuptable(SPI_tuptable);
        SPI_tuptable = nullptr;
    });
}

uint64 processed_rows() { return SPI_processed; }

Datum return_result_rows(FunctionCallInfo fcinfo) {
    pg_call([fcinfo] {
        InitMaterializedSRF(fcinfo, 0);
        auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
        int natts = SPI_tuptable->tupdesc->natts;
        Datum* values = static_cast<Datum*>(palloc(sizeof(Datum) * natts));
        bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * natts));
        for (uint64 i = 0; i < SPI_processed; ++i) {
            heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    });
    return (Datum)0;
}

std::optional<Datum> result_datum(uint64 row, int col) {
    if (SPI_tuptable == nullptr || row >= SPI_processed) {
        throw Error(sqlstate::internal_error, "pg_lifecycle: SPI result row out of range");
    }
    bool isnull = false;
    Datum d = pg_call([&] { return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull); });
    if (isnull) return std::nullopt;
    return d;
}

std::optional<int64> result_int64(uint64 row, int col) {
    auto d = result_datum(row, col);
    if (!d) return std::nullopt;
    Oid type = SPI_gettypeid(SPI_tuptable->tupdesc, col);
    switch (type) {
        case INT8OID: return DatumGetInt64(*d);
        case INT4OID: return DatumGetInt32(*d);
        case INT2OID: return DatumGetInt16(*d);
        default: throw Error(sqlstate::internal_error, fmt::format("pg_lifecycle: column {} is not an integer", col));
    }
}

std::optional<std::string> result_text(uint64 row, int col) {
    if (SPI_tuptable == nullptr || row >= SPI_processed) {
        throw Error(sqlstate::internal_error, "pg_lifecycle: SPI result row out of range");
    }
    char* s = pg_call([&] { return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col); });
    if (s == nullptr) return std::nullopt;
    std::string out(s);
    pfree(s);
    return out;
}

namespace {
[[noreturn]] void unexpected_null(int col) {
    throw Error(sqlstate::internal_error, fmt::format("pg_lifecycle: column {} of an internal query is NULL", col));
}
}  // namespace

Datum required_datum(uint64 row, int col) {
    std::optional<Datum> d = result_datum(row, col);
    if (!d) unexpected_null(col);
    return *d;
}

int64 required_int64(uint64 row, int col) {
    std::optional<int64> v = result_int64(row, col);
    if (!v) unexpected_null(col);
    return *v;
}

std::string required_text(uint64 row, int col) {
    std::optional<std::string> v = result_text(row, col);
    if (!v) unexpected_null(col);
    return std::move(*v);
}

std::string quote_ident(std::string_view ident) {
    std::string in(ident);
    return pg_call([&] {
        const char* q = quote_identifier(in.c_str());
        std::string out(q);  // no PostgreSQL call while `out` is alive
        if (q != in.c_str()) pfree(const_cast<char*>(q));
        return out;
    });
}

std::string qualified_relation_name(Oid relid) {
    char* nsp = nullptr;
    char* rel = nullptr;
    pg_call([&] {
        rel = get_rel_name(relid);
        if (rel != nullptr) nsp = get_namespace_name(get_rel_namespace(relid));
    });
    if (rel == nullptr || nsp == nullptr) {
        throw Error(sqlstate::undefined_table, fmt::format("relation with OID {} does not exist", relid));
    }
    std::string out = quote_ident(nsp) + "." + quote_ident(rel);
    pfree(rel);
    pfree(nsp);
    return out;
}

}  // namespace pg_lifecycle::bridge
