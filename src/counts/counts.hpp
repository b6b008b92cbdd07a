/*
 * counts.hpp — exact, snapshot-correct pagination counts (SPEC.md §4).
 *
 * For each table enabled with lifecycle.count_enable (a row of
 * lifecycle.count_tables with id N) the extension keeps, in schema lifecycle:
 *
 *   count_N_delta    (dims..., lc_bucket, lc_live, lc_delta)  append-only, no index;
 *                    lc_bucket is the *fine* bucket (see Config::fine_usecs)
 *   count_N_s<k>     (some dims..., lc_level, lc_bucket, lc_live, lc_n)
 *                    one summary per grouping set of the lattice (summaries()):
 *                    level 0 all time, 1 per bucket, 2 per fine bucket
 *
 * Statement-level AFTER triggers with transition tables on the table (and on
 * each of its partitions) append one row per (dims, fine bucket, live) group
 * of a statement to count_N_delta; nobody updates a shared row.  A count is
 * the sum of the visible rows of one summary plus the visible delta rows
 * matching the filter, so MVCC makes it exactly what count(*) sees in the
 * same snapshot.  The count_fold task moves delta rows into every summary in
 * one statement, atomically.  count, count_by (facets) and count_series
 * (timelines) all read through one function, count_groups in api.cpp, which
 * picks the smallest summary covering the filter (see src/counts/README.md).
 * lc_live is "deleted_at IS NULL" for a table with a deleted_at column (soft
 * delete), true otherwise.
 *
 * All SQL on these tables runs as their owner (the counted table's owner) in
 * a security-restricted context, like autovacuum.
 */
#pragma once

#include "bridge/memory.hpp"
#include "bridge/pg.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"

#include <optional>
#include <string>
#include <vector>

namespace pg_lifecycle::counts {

/* The configuration of one counted table (a row of lifecycle.count_tables). */
struct Config {
    int32 id = 0;
    Oid relid = InvalidOid;
    std::vector<std::string> dims;
    std::string time_column;  /* empty: no time column */
    int64 bucket_usecs = 0;   /* bucket width, when there is a time column */
    std::string bucket_text;  /* the bucket interval as text (trigger argument) */
    bool live_column = false; /* the table had a deleted_at column when last looked at */

    /* One grouping set of the lattice: count_N_s<no>, keyed by these
     * dimensions (indexes into dims); `timed` summaries have levels 1
     * (buckets) and 2 (fine buckets) besides level 0 (all time). */
    struct Summary {
        int no = 0;
        std::vector<size_t> dims;
        bool timed = false;
    };
    /* The lattice, chosen by choose_lattice at count_enable and kept in
     * lifecycle.count_tables.lattice ("t 1 2": timed, dimensions 1 and 2;
     * "u 3": all time only, dimension 3). */
    std::vector<Summary> lattice;
    /* Read from the schema of 0.1 (no lattice column): this library runs
     * there until ALTER EXTENSION UPDATE, which rebuilds the summaries.  Till
     * then there are no summaries to read (the table counts), deltas are by
     * bucket as in 0.1 and are not folded. */
    bool legacy = false;
    /* count_enable of a hash-distributed Citus table: its distribution
     * column, copied into the deltas as lc_dist (their own distribution
     * column, colocated with the table).  Not stored: empty otherwise. */
    std::string citus_dist;
    /* A Citus table's deltas are by bucket, not by fine bucket: there are no
     * summaries there, and the fold compacts the deltas to one row per group
     * and bucket (set where a Citus table's configuration is used). */
    bool citus_coarse = false;

    bool has_time() const { return !time_column.empty(); }
    /* The width of the delta rows' buckets and of level 2: the bucket / 60
     * when the bucket is a whole number of minutes ('1 hour' -> 1 minute),
     * else the bucket itself (then there is no level 2). */
    int64 fine_usecs() const;
    bool has_fine() const { return has_time() && fine_usecs() != bucket_usecs; }
    /* The lattice as stored in lifecycle.count_tables.lattice, and back. */
    std::vector<std::string> lattice_text() const;
    void set_lattice(const std::vector<std::string>& text);
    /* "lifecycle".count_N_delta etc. (quoted, qualified) */
    std::string delta() const;
    std::string summary(int no) const;
    /* Every count table: the delta table, then the summaries. */
    std::vector<std::string> count_tables() const;
    std::string table_name(const char* kind) const; /* unqualified: count_N_<kind> */
    /* Quoted dimension list "a", "b" (empty when none). */
    std::string dim_list(const char* prefix = "") const;
    std::string dim_list(const Summary& s) const;
};

/* A Config kept in a backend-lifetime cache (bridge/cache.hpp): the same
 * values, its strings and vectors in the cache's memory context. */
class StoredConfig {
public:
    StoredConfig(const Config& cfg, MemoryContext cxt);
    Config get() const;
    int32 id() const { return id_; }
    Oid relid() const { return relid_; }

private:
    struct Summary {
        int no;
        bridge::pvector<size_t> dims;
        bool timed;
    };
    int32 id_;
    Oid relid_;
    bridge::pvector<bridge::pstring> dims_;
    bridge::pstring time_column_;
    int64 bucket_usecs_;
    bridge::pstring bucket_text_;
    bool live_column_;
    bridge::pvector<Summary> lattice_;
    bool legacy_;
    bridge::pstring citus_dist_;
    bool citus_coarse_;
};

/* Names of the internal columns; a dimension may not use them. */
inline constexpr const char* reserved_columns[] = {"lc_bucket", "lc_live", "lc_delta", "lc_n", "lc_level"};

/* Set while count_enable/count_disable/the DDL handlers run DDL of their own,
 * so that the event triggers leave it alone. */
extern int own_ddl_depth;
struct OwnDdl {
    OwnDdl() { ++own_ddl_depth; }
    ~OwnDdl() { --own_ddl_depth; }
    OwnDdl(const OwnDdl&) = delete;
    OwnDdl& operator=(const OwnDdl&) = delete;
};

Oid lifecycle_namespace();
/* A relation of schema lifecycle by name, or InvalidOid. */
Oid lifecycle_relation(const std::string& name);

/* The configuration that applies to a relation our triggers fire on: the
 * counted table's, or its root's for a registered partition; nullopt when the
 * relation is neither.  Read through a per-backend cache (in the memory
 * context "pg_lifecycle cache" / "counts configuration") whose entry is
 * dropped on a relcache invalidation of the relation, and which is freed
 * whole on one of the registry or of everything (so the triggers never trust
 * their arguments). */
std::optional<Config> config_for_relation(Oid rel);
/* Whether config_for_relation(rel) has a configuration (without copying it). */
bool is_counted(Oid rel);
/* Tell every backend that lifecycle.count_tables or count_parts changed. */
void registry_changed();

/* Configuration of a table, or nullopt when it is not counted (SPI connected). */
std::optional<Config> load_config(Oid relid);
std::optional<Config> load_config_by_id(int32 id);
std::vector<Config> load_all_configs();
/* Whether lifecycle.count_tables has the lattice column (0.2). */
bool has_lattice_column();

/* Plans prepared once per backend, keyed by their SQL text (SPI_keepplan; the
 * plan cache revalidates them after DDL). */
using bridge::cached_plan;

/* Creates the count tables of cfg (delta and summaries), owned by table_owner. */
void create_counts_tables(const Config& cfg, Oid table_owner, bool with_delta = true);
/* Measures the cardinality of cfg's dimensions (ANALYZE of their columns)
 * and chooses the lattice of summaries (cfg.lattice) from it; returns the
 * high-cardinality dimensions (indexes into cfg.dims). */
std::vector<size_t> choose_lattice(Config& cfg);
/* Makes sure an index of the counted table starts with each of these
 * dimensions (creating one on (dimension, time column), with a NOTICE):
 * filters on them that no summary covers are counted through it. */
void index_high_dimensions(const Config& cfg, const std::vector<size_t>& high);
/* A SELECT of the rows of summary s — (its dims, lc_level, lc_bucket,
 * lc_live, lc_n) — from `source`, a FROM item with the columns dims...,
 * lc_fb (fine bucket, when timed), lc_live and lc_c (a count to add up). */
std::string summary_rows_sql(const Config& cfg, const Config::Summary& s, const std::string& source);
/* DROP TABLE IF EXISTS of every count table of cfg. */
void drop_count_tables(const Config& cfg);
/* TRUNCATE of every count table of cfg (as their owner). */
void truncate_counts(const Config& cfg);

/* "deleted_at IS NULL" when the relation has a deleted_at column, else "true". */
std::string live_expression(Oid relid);
/* The delta rows' (fine) bucket expression over the time column (parameter
 * $n, bigint, is its width in microseconds): lifecycle.count_bucket, i.e.
 * bucket_start(). */
std::string bucket_expression(const Config& cfg, int param);
/* The delta rows' (fine) bucket width (microseconds) as an int8 Datum. */
Datum bucket_interval(const Config& cfg);
int64 bucket_usecs_of(const std::string& interval_text);

/* The start of the bucket of width `stride` microseconds holding ts: buckets
 * are aligned on 2000-01-01 00:00 UTC, PostgreSQL's timestamp zero (what
 * date_bin(stride, ts, that origin) gives).  Infinite values stay as they are. */
inline TimestampTz bucket_start(TimestampTz ts, int64 stride) {
    if (TIMESTAMP_NOT_FINITE(ts)) return ts;
    int64 rem = ts % stride;
    return rem < 0 ? ts - rem - stride : ts - rem;
}

/* The owner of the count_N tables of cfg, which all their SQL runs as. */
Oid counts_owner(const Config& cfg);

/* Adds sign * (rows of `rel`, ONLY that relation unless it is partitioned,
 * grouped) to count_N_delta, reading them with a fresh snapshot. */
void scan_into_delta(const Config& cfg, Oid rel, int sign);
/* Empties the count_N tables and fills the summaries from the table's rows
 * (fresh snapshot); the caller holds a lock that keeps writers out. */
void rebuild(const Config& cfg);
/* Whether the summaries just filled by rebuild (from a fresh snapshot) hold
 * what the transaction's own snapshot sees of the table (one more scan). */
bool summaries_match_snapshot(const Config& cfg);

/* Our triggers on one relation (the counted table or one of its partitions). */
void create_triggers(const Config& cfg, Oid rel);
void drop_triggers(const Config& cfg, Oid rel);

/* The partitions (all levels) of a partitioned table that are attached (not
 * being detached), parents before children. */
std::vector<Oid> attached_partitions(Oid root);
/* Partitions registered in lifecycle.count_parts for cfg. */
std::vector<Oid> registered_parts(const Config& cfg);
void register_part(const Config& cfg, Oid part);
void unregister_part(Oid part);

/* Brings every counted table's partitions, triggers, owner and columns in line
 * after DDL (ddl_command_end, or sql_drop when `dropping`). */
void reconcile_after_ddl(bool dropping);
/* Locks a counted table and its partitions against writers (SHARE). */
void lock_against_writers(const Config& cfg);
/* Whether a plain table has inheritance children (pg_inherits, not the lazily
 * cleared relhassubclass). */
bool has_inheritance_children(Oid relid);
/* Before DROP TABLE: subtracts the rows of counted partitions about to go. */
void before_drop(Node* parsetree);
/* Before ALTER TABLE: DETACH PARTITION ... CONCURRENTLY of (a partition of) a
 * counted table is refused (55000). */
void refuse_concurrent_detach(Node* parsetree);

std::string quote_ident_str(const std::string& s);
/* s as a SQL string literal (quote_literal_cstr). */
std::string quote_literal_str(const std::string& s);
std::string relation_display_name(Oid relid);

void register_fold_task();

/* Our count trigger `trigger_name` (with these arguments) was created on rel
 * by a restore: attach the counts again (api.cpp). */
void reattach_after_restore(Oid rel, const std::string& trigger_name, const std::vector<std::string>& args);

}  // namespace pg_lifecycle::counts

/* Exact counts of Citus tables (citus.cpp). */
namespace pg_lifecycle::counts::citus {
enum class Kind { none, distributed, reference, other };
/* What kind of Citus table relid is (none without Citus, or for a table
 * Citus does not know). */
Kind kind(Oid relid);
/* count_enable of a Citus table: refusals (0A000: another kind, a column of a
 * user-defined type); sets cfg.citus_dist and an empty lattice. */
void prepare_enable(Config& cfg, Kind k);
/* Makes count_N_delta (just created) a distributed table colocated with the
 * counted one, or a reference table. */
void distribute_counts(const Config& cfg, Kind k);
/* Adds the table's rows (read through Citus) to the deltas. */
void fill(const Config& config);
/* Refuses (0A000) to distribute a table whose rows are counted (from
 * create_distributed_table / create_reference_table's function-manager hook). */
void refuse_distributing(Oid relid);
/* Empties the deltas (through Citus). */
void truncate(const Config& cfg);
/* Whether the caller may read count_N_delta (its owner, a superuser, a role
 * granted SELECT): counts are then read as the caller, over the connections
 * of its transaction; otherwise they are count(*) as the caller. */
bool caller_reads_counts(const Config& cfg);
/* On the node holding it: where the capture of a shard of a counted table
 * writes (the colocated delta shard), and the configuration, from the
 * trigger that fires there (the configuration only from a capture
 * trigger's arguments); nullopt when rel is no such shard. */
struct ShardCapture {
    Config cfg;
    Oid delta = InvalidOid;
    std::string delta_name;  /* unqualified, in our schema */
    std::string dist_column; /* empty for a reference table */
};
std::optional<ShardCapture> shard_capture(Oid rel, const Trigger* trigger);
/* The fold of a Citus table: every placement of its deltas compacted on its
 * node; returns the delta rows removed. */
int64 fold(const Config& cfg);
}  // namespace pg_lifecycle::counts::citus

namespace pg_lifecycle::counts {
/* At load time (module.cpp): the count_fold task and the cache's callback. */
void init();
/* The capture's own callbacks (capture.cpp): TRUNCATE bookkeeping across
 * subtransaction aborts, and the MERGE executor hook. */
void init_capture();
}  // namespace pg_lifecycle::counts
