/*
 * cache.hpp — a backend-lifetime cache in a memory context of its own.
 *
 *  BackendCache<T>     one T (a struct of Boost.Container containers over
 *                      PallocAllocator), built on first use inside a memory
 *                      context "pg_lifecycle cache" — a child of
 *                      CacheMemoryContext whose identifier names the cache, as
 *                      pg_backend_memory_contexts shows it.  T is constructed
 *                      with that context (T(MemoryContext)) and puts all its
 *                      allocations there.
 *
 * reset() frees everything: it forgets the T, then resets the context, whose
 * reset callback (make_owned) runs T's destructor before the context's memory
 * goes; the next get() builds a new, empty T.  So nothing outside the context
 * points into it after a reset — except a T& or a pointer to an entry that a
 * caller still holds: do not keep one across a call that can reset the cache
 * (call get() again afterwards).
 *
 * reset() calls no function that can raise an error and allocates nothing: a
 * relcache or syscache callback may call it, provided no code up the stack
 * is using the T at that moment (the caches that fill themselves with SPI
 * queries, which process invalidations, only note the invalidation in their
 * callback and reset on their next use).
 */
#pragma once

#include "bridge/guard.hpp"
#include "bridge/memory.hpp"

namespace pg_lifecycle::bridge {

template <typename T>
class BackendCache {
public:
    /* ident: a string literal naming the cache ("soft delete registry"). */
    explicit constexpr BackendCache(const char* ident) noexcept : ident_(ident) {}
    BackendCache(const BackendCache&) = delete;
    BackendCache& operator=(const BackendCache&) = delete;

    /* The cache, built (empty) when there is none. */
    T& get() {
        if (obj_ == nullptr) {
            if (cxt_ == nullptr) cxt_ = create_context(ident_);
            obj_ = make_owned<T>(cxt_, cxt_);
        }
        return *obj_;
    }
    /* The cache when it is built, else nullptr (never allocates). */
    T* built() const noexcept { return obj_; }
    /* Destroys the T and frees all the context's memory. */
    void reset() noexcept {
        obj_ = nullptr;
        if (cxt_ != nullptr) MemoryContextReset(cxt_);
    }
    MemoryContext context() const noexcept { return cxt_; }

private:
    /* ALLOCSET_SMALL_SIZES (min, initial, max), in Size arithmetic. */
    static constexpr Size small_sizes[3] = {0, Size{1} * 1024, Size{8} * 1024};
    static_assert(small_sizes[1] == static_cast<Size>(ALLOCSET_SMALL_INITSIZE) &&
                  small_sizes[2] == static_cast<Size>(ALLOCSET_SMALL_MAXSIZE));

    static MemoryContext create_context(const char* ident) {
        return pg_call([ident] {
            if (CacheMemoryContext == nullptr) CreateCacheMemoryContext();
            MemoryContext cxt = AllocSetContextCreate(CacheMemoryContext, "pg_lifecycle cache", small_sizes[0],
                                                      small_sizes[1], small_sizes[2]);
            MemoryContextSetIdentifier(cxt, ident);
            return cxt;
        });
    }

    const char* ident_;
    MemoryContext cxt_ = nullptr;
    T* obj_ = nullptr;
};

}  // namespace pg_lifecycle::bridge
