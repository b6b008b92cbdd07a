/*
 * extension.hpp — the extension's own life cycle: dump/restore, DROP
 * EXTENSION (lifecycle.cpp).
 */
#pragma once

namespace pg_lifecycle::extension {

/* The ProcessUtility hook (preloaded only): DROP EXTENSION's schema cleanup
 * and a restored dump's CREATE SCHEMA lifecycle. */
void install_utility_hook();

}  // namespace pg_lifecycle::extension
