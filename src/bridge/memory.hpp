/*
 * memory.hpp — C++ memory that lives in PostgreSQL memory contexts.
 *
 *  PallocAllocator<T>  a Boost.Container / std allocator over palloc.  It never
 *                      longjmps: allocation uses MCXT_ALLOC_NO_OOM and throws
 *                      std::bad_alloc on failure (the entry guard reports it
 *                      as SQLSTATE 53200).
 *  make_owned<T>(cxt)  constructs a long-lived C++ object inside a memory
 *                      context and registers a reset callback that runs its
 *                      destructor when the context goes away.
 */
#pragma once

#include "bridge/pg.hpp"

#include <boost/container/string.hpp>
#include <boost/container/vector.hpp>
#include <new>

namespace pg_lifecycle::bridge {

template <typename T>
class PallocAllocator {
public:
    using value_type = T;

    PallocAllocator() noexcept : cxt_(CurrentMemoryContext) {}
    explicit PallocAllocator(MemoryContext cxt) noexcept : cxt_(cxt) {}
    template <typename U>
    PallocAllocator(const PallocAllocator<U>& other) noexcept : cxt_(other.context()) {}

    T* allocate(std::size_t n) {
        if (n > MaxAllocHugeSize / sizeof(T)) throw std::bad_alloc();
        void* p = MemoryContextAllocExtended(cxt_, n * sizeof(T), MCXT_ALLOC_NO_OOM | MCXT_ALLOC_HUGE);
        if (p == nullptr) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { pfree(p); }

    MemoryContext context() const noexcept { return cxt_; }
    template <typename U>
    bool operator==(const PallocAllocator<U>& o) const noexcept {
        return cxt_ == o.context();
    }
    template <typename U>
    bool operator!=(const PallocAllocator<U>& o) const noexcept {
        return cxt_ != o.context();
    }

private:
    MemoryContext cxt_;
};

template <typename T>
using pvector = boost::container::vector<T, PallocAllocator<T>>;
using pstring = boost::container::basic_string<char, std::char_traits<char>, PallocAllocator<char>>;

/* Construct a T inside cxt; its destructor runs when cxt is reset or deleted. */
template <typename T, typename... Args>
T* make_owned(MemoryContext cxt, Args&&... args) {
    struct Holder {
        MemoryContextCallback cb;
        alignas(T) unsigned char storage[sizeof(T)];
    };
    auto* h = static_cast<Holder*>(MemoryContextAllocExtended(cxt, sizeof(Holder), MCXT_ALLOC_NO_OOM));
    if (h == nullptr) throw std::bad_alloc();
    T* obj;
    try {
        obj = new (h->storage) T(std::forward<Args>(args)...);
    } catch (...) {
        pfree(h);
        throw;
    }
    h->cb.func = [](void* p) { static_cast<T*>(p)->~T(); };
    h->cb.arg = obj;
    MemoryContextRegisterResetCallback(cxt, &h->cb); /* cannot fail */
    return obj;
}

}  // namespace pg_lifecycle::bridge
