/*
 * retention.cpp — hard-deleting soft-deleted rows: one purge batch (shared by
 * lifecycle.purge and the worker), and the worker's "soft_delete_purge" task
 * for tables enabled with a retention.
 */
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/softdelete.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

int64 purge_batch(Oid table, Interval* older_than, int batch) {
    std::string name = bridge::qualified_relation_name(table);
    /* Children first: soft-deleted rows of enabled tables whose key blocks
     * the parents' removal (RESTRICT / NO ACTION; CASCADE and SET NULL are
     * done by the foreign key itself). */
    std::string sql = fmt::format(
        "DELETE FROM ONLY {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ONLY {0} WHERE deleted_at < now() - $1 "
        "LIMIT $2 FOR UPDATE SKIP LOCKED)) AND deleted_at < now() - $1",
        name);
    Oid types[2] = {INTERVALOID, INT4OID};
    Datum values[2] = {IntervalPGetDatum(older_than), Int32GetDatum(batch)};
    int nest = pg_call([] {
        int n = NewGUCNestLevel();
        (void)set_config_option("lifecycle.include_deleted", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                                false);
        (void)set_config_option("lifecycle.hard_delete", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                                false);
        return n;
    });
    for (const ForeignKey& fk : incoming_fks(table)) {
        if (fk.on_delete != FKCONSTR_ACTION_RESTRICT && fk.on_delete != FKCONSTR_ACTION_NOACTION) continue;
        if (lookup(fk.referencing) == nullptr) continue;
        std::string ccols, pcols;
        for (size_t i = 0; i < fk.referencing_cols.size(); ++i) {
            ccols += fmt::format("{}c.{}", i ? ", " : "", bridge::quote_ident(fk.referencing_cols[i]));
            pcols += fmt::format("{}p.{}", i ? ", " : "", bridge::quote_ident(fk.referenced_cols[i]));
        }
        std::string children = fmt::format(
            "DELETE FROM {} c USING ONLY {} p WHERE ({}) = ({}) AND c.deleted_at IS NOT NULL "
            "AND p.deleted_at < now() - $1",
            bridge::qualified_relation_name(fk.referencing), name, ccols, pcols);
        bridge::execute_sql(children, 1, types, values, nullptr, false);
    }
    bridge::execute_sql(sql, 2, types, values, nullptr, false);
    int64 rows = static_cast<int64>(bridge::processed_rows());
    pg_call([nest] { AtEOXact_GUC(true, nest); });
    return rows;
}

namespace {

/* One unit per leaf of each table enabled with a retention. */
class SoftDeletePurge final : public worker::Task {
public:
    const char* name() const override { return "soft_delete_purge"; }

    void collect(std::vector<worker::Unit>& out) const override {
        bridge::execute_sql(
            "SELECT s.tbl, c.relkind = 'p' FROM lifecycle.soft_delete_tables s "
            "JOIN pg_catalog.pg_class c ON c.oid = s.tbl WHERE s.retention IS NOT NULL ORDER BY s.tbl",
            true);
        std::vector<std::pair<Oid, bool>> tables;
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            tables.emplace_back(DatumGetObjectId(*bridge::result_datum(i, 1)),
                                DatumGetBool(*bridge::result_datum(i, 2)));
        }
        for (auto [relid, partitioned] : tables) {
            if (!partitioned) {
                out.push_back(worker::Unit{this, relid, relid, bridge::qualified_relation_name(relid)});
                continue;
            }
            List* leaves = pg_call([relid] { return find_all_inheritors(relid, NoLock, nullptr); });
            ListCell* lc;
            foreach (lc, leaves) {
                Oid leaf = lfirst_oid(lc);
                if (pg_call([leaf] { return get_rel_relkind(leaf); }) == RELKIND_RELATION) {
                    out.push_back(worker::Unit{this, leaf, relid, bridge::qualified_relation_name(leaf)});
                }
            }
        }
    }

    worker::BatchResult run_batch(const worker::Unit& unit) const override {
        static bridge::Statement retention("SELECT retention FROM lifecycle.soft_delete_tables WHERE tbl = $1",
                                           {OIDOID});
        Datum key = ObjectIdGetDatum(unit.config);
        retention.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() == 0) return {0, false};
        auto r = bridge::result_datum(0, 1);
        if (!r) return {0, false};
        Interval* older_than = DatumGetIntervalP(pg_call([&r] { return datumCopy(*r, false, 16); }));
        if (pg_call([&unit] { return get_rel_relkind(unit.target); }) == '\0') return {0, false};
        constexpr int batch = 1000;
        worker::set_batch_settings();
        int64 rows;
        {
            /* As the table's owner (hard delete is the owner's right), like autovacuum. */
            bridge::AsRole as_owner(bridge::relation_owner(unit.target), SECURITY_RESTRICTED_OPERATION);
            rows = purge_batch(unit.target, older_than, batch);
        }
        return {rows, rows >= batch};
    }
};

const SoftDeletePurge soft_delete_purge;

}  // namespace

void register_retention_task() { worker::register_task(soft_delete_purge); }

}  // namespace pg_lifecycle::softdelete
