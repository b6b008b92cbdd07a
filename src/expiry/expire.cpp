/*
 * expire.cpp — row expiry: lifecycle.expire_enable/expire_disable and the
 * "expire" task, which deletes expired rows with ordinary DELETEs (so soft
 * delete, foreign-key cascades and triggers apply), in batches that skip
 * locked rows, as the table's owner, under a short lock_timeout.
 *
 * With a btree index leading with the expiry column, batches first take the
 * oldest expired rows through it (cheap when few rows have expired); once an
 * episode has taken more than 2% of the table that way, or without such an
 * index, a sweep over block ranges does the rest:
 *
 * A sweep batch is one DELETE over a range of heap blocks (a TID range scan), so a
 * row is read once and deleted where it is read, as a bulk DELETE does.  The
 * batch_size cap is kept by lifecycle._expire_take(), a qual that counts the
 * rows the DELETE takes and refuses more once the cap is reached; the range
 * adapts to how many expired rows the table's blocks hold.  The next batch
 * resumes after the last row this one looked at, so a backlog costs one pass
 * over the table; when a batch reaches the end of the table the sweep is over
 * and the next one starts again at block 0.
 *
 * Skipping locked rows without writing a row lock on every row: the DELETE
 * takes only rows whose xmax is 0 (nobody has locked or updated them since
 * they were written); the others ("held" rows) are counted, and a second
 * statement locks them with FOR UPDATE SKIP LOCKED before deleting them.  A
 * row the application locks between the read and the delete makes the
 * DELETE wait; after lock_timeout the attempt (a subtransaction) is undone
 * and the batch is done again locking every row with SKIP LOCKED.
 */
#include "bridge/cache.hpp"
#include "bridge/function.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "expiry/citus_shards.hpp"
#include "expiry/expiry.hpp"
#include "softdelete/softdelete.hpp"
#include "worker/tasks.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <vector>

namespace pg_lifecycle::expiry {

using bridge::pg_call;

/* One batch of the expire task: on a local table, on a Citus reference table
 * (through Citus, by key), on every shard of a distributed table. */
worker::BatchResult local_batch(Oid target, const std::string& column, Datum after, int64 cap);
worker::BatchResult reference_batch(Oid table, const std::string& column, Datum after, int64 cap);
worker::BatchResult shards_batch(Oid table, const std::string& column, Datum after, int64 cap);

namespace {

/* Blocks one batch may scan at most (64 MB of heap): bounds a batch's time
 * where expired rows are sparse. */
constexpr BlockNumber max_range_blocks = 8192;

/* Where each table's sweep stands (per process): its next batch looks at the
 * rows after `after`, over `blocks` blocks. */
struct Sweep {
    ItemPointerData after;
    BlockNumber blocks;
    bool ranging = false; /* a sweep over block ranges is under way */
    int64 index_rows = 0; /* rows found through the index since it last came up short */
    /* The blocks the last sweep batch deleted from, [prune_from, prune_to):
     * the next batch prunes them (see prune_blocks). */
    BlockNumber prune_from = 0;
    BlockNumber prune_to = 0;
};

/* Prune the heap pages a committed sweep batch deleted from (when their dead
 * rows are already dead to every snapshot; pages another backend has pinned
 * are skipped), so that the application's next UPDATE of a live row on them
 * does not have to do it — on the table the application touches, that work
 * would otherwise land on its statements while the sweep runs. */
void prune_blocks(Oid target, BlockNumber from, BlockNumber to, BlockNumber nblocks) {
    pg_call([=] {
        Relation rel = table_open(target, NoLock); /* the batch holds RowExclusiveLock */
        for (BlockNumber b = from; b < std::min(to, nblocks); ++b) {
            Buffer buf = ReadBufferExtended(rel, MAIN_FORKNUM, b, RBM_NORMAL, nullptr);
            heap_page_prune_opt(rel, buf);
            ReleaseBuffer(buf);
            CHECK_FOR_INTERRUPTS();
        }
        table_close(rel, NoLock);
    });
}
/* Where each table's sweep stands, for as long as the backend (the worker)
 * lives, in the memory context "pg_lifecycle cache" / "expiry sweep
 * positions" — never reset: one entry per table and per Citus shard swept.
 * Trees: a batch holds its table's Sweep& while it runs. */
struct SweepPositions {
    explicit SweepPositions(MemoryContext cxt)
        : tables(bridge::PallocAllocator<char>(cxt)), shards(bridge::PallocAllocator<char>(cxt)) {}
    bridge::pmap<Oid, Sweep> tables;
    /* The coordinator's record of where each shard's sweep stands (the
     * shard's node forgets it: every batch there runs in a new connection),
     * as _expire_shard returns it. */
    bridge::pmap<int64, bridge::pstring> shards;
};
bridge::BackendCache<SweepPositions> positions("expiry sweep positions");

Sweep& sweep_of(Oid table) {
    auto [it, inserted] = positions.get().tables.try_emplace(table);
    if (inserted) {
        ItemPointerSet(&it->second.after, 0, 0);
        it->second.blocks = 8;
        it->second.ranging = false;
        it->second.index_rows = 0;
    }
    return it->second;
}

/* What lifecycle._expire_take() has seen during the current batch's DELETE. */
struct Take {
    bool armed = false;
    int64 cap = 0;
    int64 taken = 0;         /* rows handed to the DELETE */
    int64 held = 0;          /* expired rows with xmax set, left to the locking statement */
    bool capped = false;     /* an expired row came after the cap was reached */
    ItemPointerData last{};  /* the last row taken or held */
    ItemPointerData after{}; /* the batch's range: after < row <= upto */
    ItemPointerData upto{};
};
Take take;

/* Arms lifecycle._expire_take() for one statement. */
class TakeScope {
public:
    TakeScope(int64 cap, const ItemPointerData& after, const ItemPointerData& upto) : saved_(take) {
        take = Take{};
        take.armed = true;
        take.cap = cap;
        ItemPointerSet(&take.last, 0, 0);
        take.after = after;
        take.upto = upto;
    }
    ~TakeScope() { take = saved_; }
    TakeScope(const TakeScope&) = delete;
    TakeScope& operator=(const TakeScope&) = delete;
    Take result() const { return take; }

private:
    Take saved_;
};

struct Counts {
    int64 candidates;
    std::optional<ItemPointerData> last;
    int64 deleted;
};

/* A lock wait that timed out (or a deadlock): the batch is redone locking
 * every row first, skipping the ones held. */
bool is_lock_wait(int code) { return code == ERRCODE_LOCK_NOT_AVAILABLE || code == ERRCODE_T_R_DEADLOCK_DETECTED; }

/* An error that some rows' DELETE may raise while other rows' would not (a
 * trigger, a constraint, bad data), as opposed to a cancel, a shutdown, a
 * serialization failure, a lack of resources or an internal error, which
 * end the batch. */
bool is_row_error(int code) {
    int category = ERRCODE_TO_CATEGORY(code);
    return !is_lock_wait(code) && category != ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION) &&
           category != ERRCODE_TO_CATEGORY(ERRCODE_TRANSACTION_ROLLBACK) &&
           category != ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) &&
           category != ERRCODE_TO_CATEGORY(ERRCODE_PROGRAM_LIMIT_EXCEEDED) &&
           category != ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) &&
           category != ERRCODE_TO_CATEGORY(ERRCODE_INTERNAL_ERROR);
}

class ExpireTask final : public worker::Task {
public:
    const char* name() const override { return "expire"; }

    void collect(std::vector<worker::Unit>& out) const override {
        bridge::execute_sql(
            "SELECT e.tbl, c.relkind::text FROM lifecycle.expire_tables e JOIN pg_catalog.pg_class c ON c.oid = e.tbl "
            "ORDER BY c.relkind = 'p', e.tbl", /* a partition's own registration comes before its parent's */
            true);
        std::vector<std::pair<Oid, bool>> registered;
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            Oid relid = DatumGetObjectId(bridge::required_datum(i, 1));
            registered.emplace_back(relid, bridge::result_text(i, 2).value_or("") == "p");
        }
        auto add = [&](Oid target, Oid config) {
            for (const auto& u : out) {
                if (u.task == this && u.target == target) return;
            }
            out.push_back(worker::Unit{this, target, config, bridge::qualified_relation_name(target)});
        };
        for (auto [relid, partitioned] : registered) {
            if (!partitioned) {
                add(relid, relid);
                continue;
            }
            /* One unit per leaf partition: the same round-robin fairness as tables. */
            List* leaves = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
            ListCell* lc;
            foreach (lc, leaves) {
                Oid leaf = lfirst_oid(lc);
                if (pg_call([leaf] { return get_rel_relkind(leaf); }) == RELKIND_RELATION) add(leaf, relid);
            }
        }
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        /* The settings (the table's or its partitioned root's). */
        static bridge::Statement config(
            "SELECT e.column_name::text, e.after, e.batch_size FROM lifecycle.expire_tables e WHERE e.tbl = $1",
            {OIDOID});
        Datum key = ObjectIdGetDatum(unit.config);
        config.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() == 0) return {0, false}; /* disabled or dropped since the pass began */
        std::string column = bridge::required_text(0, 1);
        Datum after = pg_call([] {
            bool isnull;
            return datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull), false, 16);
        });
        int64 cap = bridge::required_int64(0, 3);
        if (pg_call([&unit] { return get_rel_relkind(unit.target); }) == '\0') return {0, false}; /* dropped */
        switch (citus::partition_method(unit.target)) {
            case '\0': return local_batch(unit.target, column, after, cap);
            case 'n': return reference_batch(unit.target, column, after, cap);
            default: return shards_batch(unit.target, column, after, cap);
        }
    }
};

const ExpireTask expire_task;

}  // namespace

namespace {

/* One batch through the index on the expiry column: the oldest expired rows,
 * locked (skipping those held) and deleted by index_sql ($1 after, $2 the
 * cap).  Hands over to the block-range sweep when a row cannot be deleted or
 * the backlog is large (see local_batch). */
worker::BatchResult index_batch(Sweep& sweep, const std::string& index_sql,
                                const std::function<void(const std::function<void()>&)>& as_owner, Datum after,
                                int64 cap, int64 reltuples) {
    Oid index_types[2] = {INTERVALOID, INT8OID};
    Datum index_values[2] = {after, Int64GetDatum(cap)};
    int64 found = 0, deleted = 0;
    bool done = true;
    as_owner([&] {
        done = bridge::in_subtransaction(
            [&] {
                bridge::execute_cached(index_sql, 2, index_types, index_values, nullptr, false);
                found = bridge::result_int64(0, 1).value_or(0);
                deleted = bridge::result_int64(0, 3).value_or(0);
            },
            [](const bridge::PgError& e) { return is_row_error(e.sqlerrcode()); });
    });
    if (!done) {
        /* A row whose DELETE fails (a trigger that raises, a RESTRICT
         * foreign key): it would come first through the index every
         * time, so the sweep takes over, which deletes row by row
         * around such rows and reports them. */
        sweep.ranging = true;
        sweep.index_rows = 0;
        ItemPointerSet(&sweep.after, 0, 0);
        return {0, true};
    }
    if (found < cap) {
        sweep.index_rows = 0;
        return {deleted, false};
    }
    sweep.index_rows += found;
    if (sweep.index_rows >= std::max<int64>(10 * cap, reltuples / 50)) {
        sweep.ranging = true;
        sweep.index_rows = 0;
        ItemPointerSet(&sweep.after, 0, 0);
    }
    return {deleted, true};
}

/* The rows of a sweep batch one by one, when some row's DELETE fails: the
 * batch's rows locked first (candidates_sql), then each deleted in a
 * subtransaction (one_sql); the ones that fail are reported in row_error.
 * Returns the rows deleted and the rows refused; `tried` gets the rows locked. */
std::pair<int64, int64> delete_row_by_row(const std::string& candidates_sql, const std::string& one_sql,
                                          const Oid* types, const std::array<Datum, 4>& range_values, Datum after,
                                          std::vector<ItemPointerData>& tried, std::string& row_error) {
    int64 rows = 0;
    bridge::execute_cached(candidates_sql, 4, types, range_values.data(), nullptr, false);
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        tried.push_back(*reinterpret_cast<const ItemPointerData*>(DatumGetPointer(bridge::required_datum(i, 1))));
    }
    int64 refused = 0;
    for (auto& row : tried) {
        Datum one[2] = {after, PointerGetDatum(&row)};
        Oid one_types[2] = {INTERVALOID, TIDOID};
        bool ok = bridge::in_subtransaction(
            [&] {
                bridge::execute_cached(one_sql, 2, one_types, one, nullptr, false);
                rows += static_cast<int64>(bridge::processed_rows());
            },
            [&](const bridge::PgError& e) {
                if (!is_row_error(e.sqlerrcode())) return false;
                if (row_error.empty()) row_error = worker::describe_error(e);
                return true;
            });
        if (!ok) ++refused;
    }
    if (refused > 0) {
        row_error +=
            fmt::format(" ({} expired row{} of the batch could not be deleted)", refused, refused == 1 ? "" : "s");
    }
    return {rows, refused};
}

/* The block range a sweep batch looked at: blocks first..last_block, rows up
 * to `end`. */
struct Range {
    BlockNumber first;
    BlockNumber last_block;
    ItemPointerData end;
};
/* What the batch did in it. */
struct RangeOutcome {
    int64 rows;  /* deleted */
    bool capped; /* the cap was reached at `last` */
    ItemPointerData last;
    int64 counted;    /* expired rows looked at */
    bool all_refused; /* none of them could be deleted */
    std::string row_error;
};

/* After a sweep batch: the blocks to prune next time, and the next range —
 * after the last row counted when the cap was reached, else after this
 * range, sized so it should hold about `cap` expired rows; the end of the
 * table ends the sweep. */
worker::BatchResult next_range(Sweep& sweep, const Range& range, BlockNumber nblocks, int64 cap, RangeOutcome done) {
    BlockNumber first = range.first, last_block = range.last_block;
    int64 rows = done.rows, counted = done.counted;
    bool capped = done.capped, all_refused = done.all_refused;
    ItemPointerData last = done.last, range_end = range.end;
    std::string row_error = std::move(done.row_error);
    if (rows > 0) {
        sweep.prune_from = first;
        sweep.prune_to = capped ? ItemPointerGetBlockNumberNoCheck(&last) + 1 : last_block + 1;
    }
    if (capped) {
        BlockNumber used = ItemPointerGetBlockNumberNoCheck(&last) - first + 1;
        sweep.after = last;
        sweep.blocks = std::clamp<BlockNumber>(used, 1, max_range_blocks);
        /* A batch none of whose rows could be deleted ends the table's
         * share of this pass: a table that refuses every DELETE costs one
         * batch per pass, not a row-by-row pass over all of it. */
        return {rows, !all_refused, row_error};
    }
    BlockNumber k = std::max<BlockNumber>(sweep.blocks, 1);
    BlockNumber grow = std::min<BlockNumber>(k * 2, max_range_blocks);
    sweep.blocks = counted == 0
                       ? grow
                       : static_cast<BlockNumber>(std::clamp<int64>(static_cast<int64>(k) * cap / counted, 1, grow));
    if (last_block + 1 >= nblocks) {
        /* The end of the table: this sweep is over. */
        ItemPointerSet(&sweep.after, 0, 0);
        sweep.ranging = false;
        return {rows, false, row_error};
    }
    sweep.after = range_end;
    return {rows, !all_refused, row_error};
}

/* The table's row estimate, and whether a valid btree index leads with the
 * expiry column; nothing if the table is gone. */
struct TableFacts {
    int64 reltuples;
    bool indexed;
};
std::optional<TableFacts> table_facts(Oid target, const std::string& column) {
    static bridge::Statement stats(
        "SELECT greatest(c.reltuples, 0)::int8, "
        "EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_catalog.pg_am am ON am.oid = ic.relam "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = c.oid AND a.attname = $2 AND i.indisvalid AND i.indpred IS NULL "
        "AND am.amname = 'btree') "
        "FROM pg_catalog.pg_class c WHERE c.oid = $1",
        {OIDOID, NAMEOID});
    Datum keys[2] = {ObjectIdGetDatum(target), pg_call([&column] {
                         Name n = static_cast<Name>(palloc0(NAMEDATALEN));
                         namestrcpy(n, column.c_str());
                         return NameGetDatum(n);
                     })};
    stats.execute(keys, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return TableFacts{bridge::result_int64(0, 1).value_or(0), bridge::result_text(0, 2).value_or("f") == "t"};
}

/* The statements of a batch on one table.  $1 is the expiry interval
 * ("after"), $2 the batch's cap, $3/$4 the block range (ctid > $3 AND
 * ctid <= $4). */
struct BatchStatements {
    std::string table;
    std::string col;
    std::string expired; /* the expired rows' condition */
    std::string direct;  /* the range's expired rows, deleted at once */
    std::string candidates; /* row by row, when some row's DELETE fails: the batch's rows, locked */
    std::string one;        /* ... and one of them, deleted */

    /* Lock the candidate rows, skipping those held, and delete them:
     * (candidates, last candidate, deleted).  $1 after, $2 the limit. */
    std::string lock_and_delete(const std::string& where, const std::string& order_by) const {
        return fmt::format(
            "WITH candidates AS (SELECT ctid FROM ONLY {0} WHERE {1}{2} LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "deleted AS (DELETE FROM ONLY {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM candidates)) "
            "AND {3} <= pg_catalog.now() - $1 RETURNING 1) "
            "SELECT (SELECT pg_catalog.count(*) FROM candidates), (SELECT pg_catalog.max(ctid) FROM candidates), "
            "(SELECT pg_catalog.count(*) FROM deleted)",
            table, where, order_by, col);
    }
    /* lock_and_delete over the range; held_only: rows that are or were locked. */
    std::string locking(bool held_only) const {
        return lock_and_delete(
            fmt::format("ctid > $3 AND ctid <= $4 AND {}{}", expired, held_only ? " AND xmax <> '0'" : ""), "");
    }
};

BatchStatements batch_statements(Oid target, const std::string& column, bool soft_delete) {
    BatchStatements sql;
    sql.table = bridge::qualified_relation_name(target);
    sql.col = bridge::quote_ident(column);
    /* On a soft-delete table the DELETE keeps the rows: take live ones only
     * (with hide on, the planner hook adds the same test). */
    sql.expired = fmt::format("{} <= pg_catalog.now() - $1{}", sql.col,
                              soft_delete ? fmt::format(" AND {} IS NULL", softdelete::deleted_at_column) : "");
    sql.direct =
        fmt::format("DELETE FROM ONLY {0} WHERE ctid > $3 AND ctid <= $4 AND lifecycle._expire_take(ctid, xmax, {1})",
                    sql.table, sql.expired);
    sql.candidates = fmt::format(
        "SELECT ctid FROM ONLY {0} WHERE ctid > $3 AND ctid <= $4 AND {1} ORDER BY ctid LIMIT $2 "
        "FOR UPDATE SKIP LOCKED",
        sql.table, sql.expired);
    sql.one = fmt::format("DELETE FROM ONLY {0} WHERE ctid = $2 AND {1} <= pg_catalog.now() - $1", sql.table, sql.col);
    return sql;
}

void run_as_owner(Oid owner, const std::function<void()>& body);

/* One block-range batch: the expired rows from range_start to range_end
 * deleted at once, as the table's owner.  If a row is locked, the batch
 * locks its rows first, skipping those held; if some row's DELETE fails, it
 * deletes them one by one and reports the ones that fail. */
RangeOutcome range_batch(const BatchStatements& sql, Oid owner, Datum after, int64 cap,
                         const ItemPointerData& range_start, const ItemPointerData& range_end) {
    Oid types[4] = {INTERVALOID, INT8OID, TIDOID, TIDOID};
    auto values = [&](int64 limit, const ItemPointerData* upto) {
        return std::array<Datum, 4>{after, Int64GetDatum(limit),
                                    PointerGetDatum(const_cast<ItemPointerData*>(&range_start)),
                                    PointerGetDatum(const_cast<ItemPointerData*>(upto))};
    };
    auto run_locking = [&](bool held_only, int64 limit, const ItemPointerData* upto) {
        auto v = values(limit, upto);
        bridge::execute_cached(sql.locking(held_only), 4, types, v.data(), nullptr, false);
        Counts c{bridge::result_int64(0, 1).value_or(0), std::nullopt, bridge::result_int64(0, 3).value_or(0)};
        if (auto d = bridge::result_datum(0, 2))
            c.last = *reinterpret_cast<const ItemPointerData*>(DatumGetPointer(*d));
        return c;
    };

    RangeOutcome out{0, false, {}, 0, false, {}};
    run_as_owner(owner, [&] {
        Take seen;
        enum { done, lock_timeout, row_failed } outcome = done;
        bridge::in_subtransaction(
            [&] {
                {
                    TakeScope scope(cap, range_start, range_end);
                    auto v = values(cap, &range_end);
                    bridge::execute_cached(sql.direct, 4, types, v.data(), nullptr, false);
                    out.rows = static_cast<int64>(bridge::processed_rows());
                    seen = scope.result();
                }
                if (seen.held > 0) {
                    /* Rows that are or were locked: lock them now, skipping
                     * those still held, and delete the ones locked. */
                    Counts c = run_locking(true, cap - seen.taken, seen.capped ? &seen.last : &range_end);
                    out.rows += c.deleted;
                }
            },
            [&](const bridge::PgError& e) {
                if (is_lock_wait(e.sqlerrcode())) {
                    outcome = lock_timeout;
                } else if (is_row_error(e.sqlerrcode())) {
                    outcome = row_failed;
                } else {
                    return false; /* a cancel, a shutdown...: the batch ends */
                }
                return true;
            });
        if (outcome == done) {
            out.capped = seen.capped;
            out.counted = seen.taken + seen.held;
            out.last = seen.last;
        } else if (outcome == lock_timeout) {
            /* A row locked after the DELETE read it: the whole batch again,
             * every row locked first, skipping those held. */
            Counts c = run_locking(false, cap, &range_end);
            out.rows = c.deleted;
            out.counted = c.candidates;
            out.capped = c.candidates >= cap && c.last.has_value();
            if (c.last) out.last = *c.last;
        } else {
            /* Some row's DELETE fails: lock the batch's rows, then delete
             * them one by one, each in a subtransaction, and report the
             * ones that fail.  The sweep goes on past them. */
            std::vector<ItemPointerData> rows_to_try;
            auto [deleted, refused] = delete_row_by_row(sql.candidates, sql.one, types, values(cap, &range_end),
                                                        after, rows_to_try, out.row_error);
            out.rows = deleted;
            out.counted = static_cast<int64>(rows_to_try.size());
            out.capped = out.counted >= cap;
            if (out.capped) out.last = rows_to_try.back();
            out.all_refused = refused > 0 && refused == out.counted;
        }
    });
    return out;
}

}  // namespace

/* One batch of the expire task on a local table (a table, a leaf partition,
 * or the shard of a Citus table on the node that holds it). */
worker::BatchResult local_batch(Oid target, const std::string& column, Datum after, int64 cap) {
    std::optional<TableFacts> facts = table_facts(target, column);
    if (!facts) return {0, false};
    bool soft_delete = softdelete::lookup(target) != nullptr;
    BatchStatements sql = batch_statements(target, column, soft_delete);

    worker::set_batch_settings();
    Oid owner = bridge::relation_owner(target);
    /* The table lock first, under lock_timeout: a lock timeout in the
     * DELETE then means a row lock. */
    BlockNumber nblocks = pg_call([target] {
        Relation rel = table_open(target, RowExclusiveLock);
        BlockNumber n = RelationGetNumberOfBlocks(rel);
        table_close(rel, NoLock);
        return n;
    });

    Sweep& sweep = sweep_of(target);
    if (sweep.prune_to > sweep.prune_from) {
        prune_blocks(target, sweep.prune_from, sweep.prune_to, nblocks);
        sweep.prune_from = sweep.prune_to = 0;
    }

    /* With an index on the column, batches first take the oldest expired
     * rows through it: when few rows are expired (the steady state) that
     * costs a few index pages instead of a pass over the table.  Once
     * this episode has found more than 2% of the table (at least ten
     * batches) through the index, the backlog is large enough that one
     * pass over the heap is cheaper: the block-range sweep takes over
     * until it reaches the end of the table.  Not on a soft-delete table:
     * its expired rows stay in it, soft-deleted, and every index batch
     * would walk past all of them again.  The batch's statements run as the
     * table's owner, like autovacuum: its triggers never get the worker's
     * superuser rights. */
    if (!sweep.ranging && facts->indexed && !soft_delete) {
        auto as_owner = [owner](const std::function<void()>& body) { run_as_owner(owner, body); };
        return index_batch(sweep, sql.lock_and_delete(sql.expired, " ORDER BY " + sql.col), as_owner, after, cap,
                           facts->reltuples);
    }
    sweep.ranging = true;

    /* The range: the rows after sweep.after, over sweep.blocks blocks (a
     * partly looked-at block counts as one). */
    ItemPointerData range_start = sweep.after;
    BlockNumber first = ItemPointerGetBlockNumberNoCheck(&range_start) +
                        (ItemPointerGetOffsetNumberNoCheck(&range_start) == PG_UINT16_MAX ? 1 : 0);
    BlockNumber last_block = first + std::max<BlockNumber>(sweep.blocks, 1) - 1;
    ItemPointerData range_end;
    ItemPointerSet(&range_end, last_block, PG_UINT16_MAX);

    RangeOutcome done = range_batch(sql, owner, after, cap, range_start, range_end);
    return next_range(sweep, Range{first, last_block, range_end}, nblocks, cap, std::move(done));
}

namespace {

/* body as the table's owner, in a security-restricted operation whose
 * setting changes are rolled back (like autovacuum). */
void run_as_owner(Oid owner, const std::function<void()>& body) {
    int nest = pg_call([] { return NewGUCNestLevel(); });
    {
        bridge::AsRole role(owner, SECURITY_RESTRICTED_OPERATION);
        body();
    }
    pg_call([nest] { AtEOXact_GUC(false, nest); });
}

std::string schema_prefix() {
    return bridge::quote_ident(pg_call([] { return std::string(get_namespace_name(bridge::extension_schema())); })) +
           ".";
}

}  // namespace

/* The sweep position of a local table, as text, and back. */
std::string sweep_state(Oid table) {
    const Sweep& s = sweep_of(table);
    return fmt::format("{} {} {} {} {} {} {}", ItemPointerGetBlockNumberNoCheck(&s.after),
                       ItemPointerGetOffsetNumberNoCheck(&s.after), s.blocks, s.ranging ? 1 : 0, s.index_rows,
                       s.prune_from, s.prune_to);
}

void set_sweep_state(Oid table, const std::string& state) {
    unsigned long block = 0, offset = 0, blocks = 8, ranging = 0, from = 0, to = 0;
    long long index_rows = 0;
    if (std::sscanf(state.c_str(), "%lu %lu %lu %lu %lld %lu %lu", &block, &offset, &blocks, &ranging, &index_rows,
                    &from, &to) != 7) {
        return; /* none yet: a new sweep */
    }
    Sweep& s = sweep_of(table);
    ItemPointerSet(&s.after, static_cast<BlockNumber>(block), static_cast<OffsetNumber>(offset));
    s.blocks = std::clamp<BlockNumber>(static_cast<BlockNumber>(blocks), 1, max_range_blocks);
    s.ranging = ranging != 0;
    s.index_rows = index_rows;
    s.prune_from = static_cast<BlockNumber>(from);
    s.prune_to = static_cast<BlockNumber>(to);
}

/* A distributed table: one batch on every shard placement, in parallel, on
 * the node that holds it (lifecycle._expire_shard there, which works as the
 * table's owner).  Each placement's batch commits on its node on its own. */
worker::BatchResult shards_batch(Oid table, const std::string& column, Datum after, int64 cap) {
    std::vector<citus::Placement> where = citus::placements(table);
    std::string fn = schema_prefix() + "_expire_shard";
    std::string after_sql = citus::interval_literal(DatumGetIntervalP(after));
    std::vector<std::string> commands;
    for (const auto& p : where) {
        const auto& shards = positions.get().shards;
        auto it = shards.find(p.shardid);
        commands.push_back(fmt::format("SELECT {}({}::pg_catalog.regclass, {}::pg_catalog.name, {}, {}, {})", fn,
                                       citus::literal(p.shard), citus::literal(column), after_sql, cap,
                                       citus::literal(it == shards.end() ? "" : bridge::to_string(it->second))));
    }
    /* As the worker's (or run_maintenance's) own role: the table's owner may
     * not log in.  _expire_shard does the batch as the shard's owner. */
    std::vector<citus::RemoteResult> results = citus::run_on_placements(where, commands);
    worker::BatchResult out{0, false};
    for (size_t i = 0; i < results.size(); ++i) {
        const auto& r = results[i];
        if (!r.success) {
            if (out.error.empty())
                out.error =
                    fmt::format("shard {} on {}:{}: {}", where[i].shard, where[i].node, where[i].port, r.result);
            continue;
        }
        /* "<rows> <more> <sweep state>\n<rows it could not delete>" */
        long long rows = 0;
        int more = 0, used = 0;
        if (std::sscanf(r.result.c_str(), "%lld %d %n", &rows, &more, &used) < 2) {
            if (out.error.empty())
                out.error = fmt::format("shard {}: unexpected result \"{}\"", where[i].shard, r.result);
            continue;
        }
        std::string rest = r.result.substr(static_cast<size_t>(used));
        size_t nl = rest.find('\n');
        std::string_view state = std::string_view(rest).substr(0, nl);
        SweepPositions& kept = positions.get();
        kept.shards.insert_or_assign(where[i].shardid, bridge::to_pstring(state, positions.context()));
        if (nl != std::string::npos && nl + 1 < rest.size() && out.error.empty()) {
            out.error = fmt::format("shard {}: {}", where[i].shard, rest.substr(nl + 1));
        }
        out.rows += rows;
        out.more = out.more || more != 0;
    }
    if (results.empty()) return out;
    if (out.error.empty() || out.rows > 0 || out.more) return out;
    /* Every placement failed: the batch fails (recorded, retried next pass). */
    throw Error(sqlstate::internal_error, out.error);
}

/* A reference table (or a Citus local table): through Citus, by value, so
 * every placement loses the same rows — the rows of one batch by primary key
 * (without one, every expired row in one statement).  Rows an application
 * transaction holds are waited for, up to lock_timeout (Citus takes no row
 * locks with SKIP LOCKED on them): the batch then fails and is retried. */
worker::BatchResult reference_batch(Oid table, const std::string& column, Datum after, int64 cap) {
    std::string name = bridge::qualified_relation_name(table);
    std::string col = bridge::quote_ident(column);
    bool soft_delete = softdelete::lookup(table) != nullptr;
    std::string expired = fmt::format("{} OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.-) $1){}", col,
                                      soft_delete ? " AND deleted_at IS NULL" : "");
    Oid types[1] = {INTERVALOID};
    Datum args[1] = {ObjectIdGetDatum(table)};
    Oid oid_type = OIDOID;
    bridge::execute_cached(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n) "
        "FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, n), pg_catalog.pg_attribute "
        "a "
        "WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attrelid OPERATOR(pg_catalog.=) "
        "i.indrelid "
        "AND a.attnum OPERATOR(pg_catalog.=) k.attnum",
        1, &oid_type, args, nullptr, true, 1);
    std::optional<std::string> key = bridge::processed_rows() ? bridge::result_text(0, 1) : std::nullopt;
    std::string sql = key ? fmt::format(
                                "DELETE FROM ONLY {0} WHERE {1} AND ({2}) IN "
                                "(SELECT {2} FROM ONLY {0} WHERE {1} LIMIT {3})",
                                name, expired, *key, cap)
                          : fmt::format("DELETE FROM ONLY {} WHERE {}", name, expired);
    int64 rows = 0;
    run_as_owner(bridge::relation_owner(table), [&] {
        bridge::execute_cached(sql, 1, types, &after, nullptr, false);
        rows = static_cast<int64>(bridge::processed_rows());
    });
    return {rows, key.has_value() && rows >= cap};
}

void register_expire_task() { worker::register_task(expire_task); }

}  // namespace pg_lifecycle::expiry

using namespace pg_lifecycle;
using bridge::pg_call;

/* lifecycle.expire_enable(tbl regclass, column_name name, after interval, batch_size integer) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_expire_enable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    bridge::require_arg(fcinfo, 1, "column_name");
    bridge::require_arg(fcinfo, 2, "after");
    bridge::require_arg(fcinfo, 3, "batch_size");
    Oid relid = PG_GETARG_OID(0);
    std::string column = NameStr(*PG_GETARG_NAME(1));
    Interval* after = PG_GETARG_INTERVAL_P(2);
    int32 batch_size = PG_GETARG_INT32(3);

    bridge::require_table(relid, "Row expiry");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "enable expiry on it");
    /* On a Citus cluster the coordinator's registration is swept on every
     * shard; a worker node's would sweep them all a second time. */
    if (expiry::citus::partition_method(relid) != '\0' && !expiry::citus::on_coordinator()) {
        throw Error(sqlstate::feature_not_supported,
                    fmt::format("expiry of Citus table {} is enabled on the coordinator", table), {},
                    "Call lifecycle.expire_enable on the coordinator: it sweeps every shard of the table.");
    }

    AttrNumber attnum = pg_call([&] { return get_attnum(relid, column.c_str()); });
    if (attnum == InvalidAttrNumber) {
        throw Error(sqlstate::undefined_column,
                    fmt::format("column \"{}\" of relation {} does not exist", column, table));
    }
    Oid type = pg_call([&] { return get_atttype(relid, attnum); });
    if (type != TIMESTAMPTZOID && type != TIMESTAMPOID && type != DATEOID) {
        throw Error(sqlstate::datatype_mismatch,
                    fmt::format("column \"{}\" of relation {} is not a timestamp", column, table),
                    fmt::format("Its type is {}.", pg_call([type] { return std::string(format_type_be(type)); })),
                    "Expiry needs a timestamptz, timestamp or date column.");
    }
    if (bridge::interval_sign(after) < 0) {
        throw Error(sqlstate::invalid_parameter_value, "after must not be negative", {},
                    "A row expires when column + after <= now().");
    }
    if (batch_size < 1 || batch_size > 1000000) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("batch_size must be between 1 and 1000000, not {}", batch_size));
    }

    static bridge::Statement upsert(
        "INSERT INTO lifecycle.expire_tables (tbl, column_name, after, batch_size) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (tbl) DO UPDATE SET column_name = EXCLUDED.column_name, after = EXCLUDED.after, "
        "batch_size = EXCLUDED.batch_size",
        {REGCLASSOID, NAMEOID, INTERVALOID, INT4OID});
    bridge::SpiConnection spi;
    Oid ext_owner = bridge::extension_owner();
    Datum values[4] = {ObjectIdGetDatum(relid), PG_GETARG_DATUM(1), IntervalPGetDatum(after),
                       Int32GetDatum(batch_size)};
    bridge::AsRole as_owner(ext_owner);
    upsert.execute(values, nullptr, false);
    PG_RETURN_VOID();
}

/* lifecycle.expire_disable(tbl regclass) RETURNS void */
LIFECYCLE_FUNCTION(lifecycle_expire_disable) {
    bridge::require_arg(fcinfo, 0, "tbl");
    Oid relid = PG_GETARG_OID(0);
    bridge::require_table(relid, "Row expiry");
    std::string table = bridge::qualified_relation_name(relid);
    bridge::require_owner(relid, "disable expiry on it");

    static bridge::Statement remove("DELETE FROM lifecycle.expire_tables WHERE tbl = $1", {REGCLASSOID});
    bridge::SpiConnection spi;
    Oid ext_owner = bridge::extension_owner();
    Datum key = ObjectIdGetDatum(relid);
    {
        bridge::AsRole as_owner(ext_owner);
        remove.execute(&key, nullptr, false);
    }
    if (bridge::processed_rows() == 0) {
        throw Error(sqlstate::object_not_in_prerequisite_state, fmt::format("expiry is not enabled on table {}", table),
                    {}, "See lifecycle.expire_tables for the tables it is enabled on.");
    }
    PG_RETURN_VOID();
}

/* lifecycle._expire_take(row tid, row_xmax xid, expired boolean) RETURNS boolean
 * The expiry batch's row cap, as a qual of its DELETE: true for an expired row
 * with xmax 0 while fewer than batch_size rows were counted; counts expired
 * rows with xmax set (for the locking statement) without taking them. */
LIFECYCLE_FUNCTION(lifecycle_expire_take) {
    using expiry::take;
    if (!take.armed) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "lifecycle._expire_take() is internal to expiry batches", {},
                    "It only works inside the DELETE of a batch of the expire task.");
    }
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || !PG_GETARG_BOOL(2) || take.capped) {
        PG_RETURN_BOOL(false);
    }
    ItemPointer row = reinterpret_cast<ItemPointer>(PG_GETARG_POINTER(0));
    /* Only rows of the batch's range: a row updated while the DELETE waited
     * for it is rechecked in its new version, which may lie elsewhere; it is
     * left for a later sweep. */
    if (ItemPointerCompare(row, &take.after) <= 0 || ItemPointerCompare(row, &take.upto) > 0) {
        PG_RETURN_BOOL(false);
    }
    if (take.taken + take.held >= take.cap) {
        take.capped = true;
        PG_RETURN_BOOL(false);
    }
    if (ItemPointerCompare(row, &take.last) > 0) take.last = *row;
    if (DatumGetTransactionId(PG_GETARG_DATUM(1)) != InvalidTransactionId) {
        ++take.held;
        PG_RETURN_BOOL(false);
    }
    ++take.taken;
    PG_RETURN_BOOL(true);
}

/* lifecycle._expire_shard(shard regclass, column_name name, after interval,
 *                         batch_size integer, state text) RETURNS text
 * One batch of the expire task on a shard of a distributed table, on the node
 * that holds it: what the coordinator's expire task runs on each placement.
 * The caller must own the shard (or be a superuser, as the worker is); the
 * batch runs as the shard's owner, in a security-restricted operation.  state is the shard's
 * sweep position from the previous batch ('' for none); the result is
 * "<rows> <more 0|1> <new state>", then after a newline the rows it could not
 * delete, if any. */
LIFECYCLE_FUNCTION(lifecycle_expire_shard) {
    for (int i = 0; i < 5; ++i) bridge::require_arg(fcinfo, i, "argument");
    Oid shard = PG_GETARG_OID(0);
    std::string column = NameStr(*PG_GETARG_NAME(1));
    Interval* after = PG_GETARG_INTERVAL_P(2);
    int32 cap = PG_GETARG_INT32(3);
    std::string state = bridge::text_arg(fcinfo, 4);
    bridge::require_table(shard, "Row expiry");
    bridge::require_owner(shard, "expire rows of it");
    if (cap < 1 || cap > 1000000) {
        throw Error(sqlstate::invalid_parameter_value,
                    fmt::format("batch_size must be between 1 and 1000000, not {}", cap));
    }
    bridge::SpiConnection spi;
    expiry::set_sweep_state(shard, state);
    worker::set_batch_settings();
    worker::BatchResult r = expiry::local_batch(shard, column, IntervalPGetDatum(after), cap);
    std::string out = fmt::format("{} {} {}", r.rows, r.more ? 1 : 0, expiry::sweep_state(shard));
    if (!r.error.empty()) out += "\n" + r.error;
    return bridge::text_datum(out);
}
