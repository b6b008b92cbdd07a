/*
 * config.cpp — the configuration of a counted table (lifecycle.count_tables), cached per
 * backend, and which configuration a relation's triggers work for.
 */
#include "bridge/cache.hpp"
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"
#include "softdelete/citus.hpp"

#include <algorithm>

namespace pg_lifecycle::counts {

using bridge::pg_call;

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

namespace {

/* Columns: id, tbl, time_column, bucket::text, bucket usecs, dimensions, live_column, lattice. */
#define CONFIG_COLUMNS_WITHOUT_LATTICE                       \
    "SELECT id, tbl::oid, time_column::text, bucket::text, " \
    "(extract(epoch FROM bucket) * 1000000)::bigint, dimensions, live_column, "
#define CONFIG_COLUMNS CONFIG_COLUMNS_WITHOUT_LATTICE "lattice FROM lifecycle.count_tables "
/* The schema of 0.1, run by this library until ALTER EXTENSION UPDATE. */
#define CONFIG_COLUMNS_0_1 CONFIG_COLUMNS_WITHOUT_LATTICE "NULL::pg_catalog.text[] FROM lifecycle.count_tables "

Config config_from_row(uint64 row) {
    Config c;
    c.legacy = !bridge::result_datum(row, 8).has_value();
    c.id = static_cast<int32>(bridge::required_int64(row, 1));
    c.relid = DatumGetObjectId(bridge::required_datum(row, 2));
    c.time_column = bridge::result_text(row, 3).value_or("");
    c.bucket_text = bridge::result_text(row, 4).value_or("");
    c.bucket_usecs = bridge::result_int64(row, 5).value_or(0);
    c.live_column = DatumGetBool(bridge::required_datum(row, 7));
    Datum dims = bridge::required_datum(row, 6);
    pg_call([&] {
        ArrayType* arr = DatumGetArrayTypeP(dims);
        Datum* elems;
        bool* nulls;
        int n;
        deconstruct_array(arr, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
        for (int i = 0; i < n; ++i) {
            if (!nulls[i]) c.dims.emplace_back(NameStr(*DatumGetName(elems[i])));
        }
    });
    std::vector<std::string> lattice;
    if (auto arr = bridge::result_datum(row, 8)) {
        pg_call([&] {
            Datum* elems;
            bool* nulls;
            int n;
            deconstruct_array(DatumGetArrayTypeP(*arr), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
            for (int i = 0; i < n; ++i) {
                if (!nulls[i]) lattice.emplace_back(TextDatumGetCString(elems[i]));
            }
        });
    }
    c.set_lattice(lattice);
    return c;
}

std::vector<Config> configs_from_result() {
    std::vector<Config> out;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) out.push_back(config_from_row(i));
    return out;
}

}  // namespace

bool has_lattice_column() {
    Oid tables = lifecycle_relation("count_tables");
    return OidIsValid(tables) && pg_call([tables] { return get_attnum(tables, "lattice"); }) > 0;
}

std::optional<Config> load_config(Oid relid) {
    static bridge::Statement by_table(CONFIG_COLUMNS "WHERE tbl = $1", {OIDOID});
    static bridge::Statement by_table_0_1(CONFIG_COLUMNS_0_1 "WHERE tbl = $1", {OIDOID});
    Datum key = ObjectIdGetDatum(relid);
    (has_lattice_column() ? by_table : by_table_0_1).execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::optional<Config> load_config_by_id(int32 id) {
    static bridge::Statement by_id(CONFIG_COLUMNS "WHERE id = $1", {INT4OID});
    static bridge::Statement by_id_0_1(CONFIG_COLUMNS_0_1 "WHERE id = $1", {INT4OID});
    Datum key = Int32GetDatum(id);
    (has_lattice_column() ? by_id : by_id_0_1).execute(&key, nullptr, true, 1);
    if (bridge::processed_rows() == 0) return std::nullopt;
    return config_from_row(0);
}

std::vector<Config> load_all_configs() {
    static bridge::Statement all(CONFIG_COLUMNS "ORDER BY id", {});
    static bridge::Statement all_0_1(CONFIG_COLUMNS_0_1 "ORDER BY id", {});
    (has_lattice_column() ? all : all_0_1).execute(nullptr, nullptr, true);
    return configs_from_result();
}

/* ------------------------------------------------------------------------
 * Which configuration a relation's triggers work for
 * ------------------------------------------------------------------------ */

StoredConfig::StoredConfig(const Config& cfg, MemoryContext cxt)
    : id_(cfg.id),
      relid_(cfg.relid),
      dims_(bridge::to_pstrings(cfg.dims, cxt)),
      time_column_(bridge::to_pstring(cfg.time_column, cxt)),
      bucket_usecs_(cfg.bucket_usecs),
      bucket_text_(bridge::to_pstring(cfg.bucket_text, cxt)),
      live_column_(cfg.live_column),
      lattice_(bridge::PallocAllocator<Summary>(cxt)),
      legacy_(cfg.legacy),
      citus_dist_(bridge::to_pstring(cfg.citus_dist, cxt)),
      citus_coarse_(cfg.citus_coarse) {
    lattice_.reserve(cfg.lattice.size());
    for (const Config::Summary& s : cfg.lattice) {
        lattice_.push_back(
            Summary{s.no, bridge::pvector<size_t>(s.dims.begin(), s.dims.end(), bridge::PallocAllocator<size_t>(cxt)),
                    s.timed});
    }
}

Config StoredConfig::get() const {
    Config c;
    c.id = id_;
    c.relid = relid_;
    c.dims = bridge::to_strings(dims_);
    c.time_column = bridge::to_string(time_column_);
    c.bucket_usecs = bucket_usecs_;
    c.bucket_text = bridge::to_string(bucket_text_);
    c.live_column = live_column_;
    c.lattice.reserve(lattice_.size());
    for (const Summary& s : lattice_)
        c.lattice.push_back(Config::Summary{s.no, {s.dims.begin(), s.dims.end()}, s.timed});
    c.legacy = legacy_;
    c.citus_dist = bridge::to_string(citus_dist_);
    c.citus_coarse = citus_coarse_;
    return c;
}

namespace {

/* relid -> its configuration, or none (not counted); a tree, so that the
 * relcache callback's erase moves no entry. */
struct ConfigCache {
    explicit ConfigCache(MemoryContext cxt) : entries(bridge::PallocAllocator<char>(cxt)) {}
    bridge::pmap<Oid, std::optional<StoredConfig>> entries;
};
bridge::BackendCache<ConfigCache> config_cache("counts configuration");
uint64 config_invalidations = 0;
Oid cached_tables_oid = InvalidOid; /* lifecycle.count_tables and count_parts when the cache was filled */
Oid cached_parts_oid = InvalidOid;

extern "C" void config_cache_callback(Datum, Oid relid) {
    /* No allocation, no PostgreSQL call: only forget (nothing uses the cache
     * across a call that processes invalidations).  registry_changed() names
     * count_tables; everything is InvalidOid. */
    ++config_invalidations;
    if (relid == InvalidOid || relid == cached_tables_oid || relid == cached_parts_oid) {
        config_cache.reset();
    } else if (ConfigCache* c = config_cache.built()) {
        c->entries.erase(relid);
    }
}

/* Whether lifecycle.count_tables and count_parts exist; a cache filled for
 * other ones (the extension was re-created since) is freed. */
bool registry_present() {
    Oid tables = lifecycle_relation("count_tables");
    Oid parts = lifecycle_relation("count_parts");
    if (!OidIsValid(tables) || !OidIsValid(parts)) return false;
    if (tables != cached_tables_oid || parts != cached_parts_oid) {
        config_cache.reset();
        cached_tables_oid = tables;
        cached_parts_oid = parts;
    }
    return true;
}

/* The cached entry of rel: nullptr when not cached, else its configuration
 * or none. */
const std::optional<StoredConfig>* cached_config(Oid rel) {
    const auto& entries = config_cache.get().entries;
    auto it = entries.find(rel);
    return it == entries.end() ? nullptr : &it->second;
}

/* Reads rel's configuration and keeps it, unless an invalidation arrived
 * while it was read (then it is used once and not kept). */
std::optional<Config> read_config(Oid rel) {
    uint64 seen = config_invalidations;
    static bridge::Statement owner_of(
        "SELECT id FROM lifecycle.count_tables WHERE tbl OPERATOR(pg_catalog.=) $1 "
        "UNION ALL SELECT id FROM lifecycle.count_parts WHERE part OPERATOR(pg_catalog.=) $1 LIMIT 1",
        {REGCLASSOID});
    std::optional<Config> cfg;
    {
        bridge::SpiConnection spi;
        Datum key = ObjectIdGetDatum(rel);
        owner_of.execute(&key, nullptr, true, 1);
        if (bridge::processed_rows() > 0) cfg = load_config_by_id(static_cast<int32>(bridge::required_int64(0, 1)));
    }
    if (config_invalidations == seen) {
        ConfigCache& c = config_cache.get(); /* afresh: the queries may have reset it */
        MemoryContext cxt = config_cache.context();
        std::optional<StoredConfig> entry;
        if (cfg) entry.emplace(*cfg, cxt);
        c.entries.insert_or_assign(rel, std::move(entry));
    }
    return cfg;
}

}  // namespace

void registry_changed() {
    Oid tables = lifecycle_relation("count_tables");
    pg_call([tables] {
        if (OidIsValid(tables)) CacheInvalidateRelcacheByRelid(tables);
    });
    config_cache.reset();
}

std::optional<Config> config_for_relation(Oid rel) {
    if (!registry_present()) return std::nullopt;
    if (const std::optional<StoredConfig>* kept = cached_config(rel)) {
        if (!*kept) return std::nullopt;
        return (*kept)->get();
    }
    return read_config(rel);
}

bool is_counted(Oid rel) {
    if (!registry_present()) return false;
    if (const std::optional<StoredConfig>* kept = cached_config(rel)) return kept->has_value();
    return read_config(rel).has_value();
}

void init() {
    pg_call([] { CacheRegisterRelcacheCallback(config_cache_callback, (Datum)0); });
    init_capture();
}

}  // namespace pg_lifecycle::counts
