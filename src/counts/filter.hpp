/*
 * filter.hpp — the pure C++ part of exact counts (SPEC.md §4): parsing and
 * validating the filter argument of lifecycle.count, and reading the planner's
 * row estimate out of EXPLAIN (FORMAT JSON) output for count_estimate.
 *
 * No PostgreSQL header: unit-tested on its own (test/unit/counts_test.cpp).
 * Errors are pg_lifecycle::Error with SQLSTATE 22023 and a hint.
 */
#pragma once

#include "bridge/error.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pg_lifecycle::counts {

/* Equality on one dimension: any of `values` (text forms, converted to the
 * column's type by its input function), or SQL NULL when match_null. */
struct DimensionFilter {
    std::size_t dimension = 0;       /* index into the table's dimension list */
    std::vector<std::string> values; /* non-null values, in the order given */
    bool match_null = false;         /* JSON null: matches SQL NULL */
};

/* A parsed filter: at most one condition per dimension, ordered by dimension
 * index (so equal filters give equal SQL, and share one cached plan). */
struct Filter {
    std::vector<DimensionFilter> conditions;
};

/* Parses `json` (the text of a jsonb value) against the dimensions of `table`
 * (its display name, for messages).  Accepted:
 *   {}                                   no condition
 *   {"outcome": "error"}                 one value: string, number or boolean
 *   {"outcome": ["error", "denied"]}     any of several values
 *   {"user_id": null} / [.., null]       SQL NULL
 * Errors (22023): not an object; a key that is not a dimension (the hint lists
 * the dimensions); a value that is an object or a nested array. */
Filter parse_filter(std::string_view json, const std::vector<std::string>& dimensions, std::string_view table);

/* The top plan node's "Plan Rows" in EXPLAIN (FORMAT JSON) output, or nullopt
 * when there is none. */
std::optional<double> explain_plan_rows(std::string_view explain_json);

/* "a, b, c" for messages. */
std::string join_names(const std::vector<std::string>& names);

}  // namespace pg_lifecycle::counts
