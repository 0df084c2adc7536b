// Dirty-page tracking from outside a process: userfaultfd asynchronous write-protection
// (UFFD_FEATURE_WP_ASYNC, Linux 6.7) read and re-armed with the PAGEMAP_SCAN ioctl on
// /proc/PID/pagemap (ioctl_pagemap_scan(2), Linux 6.7). Soft-dirty bits would do the same
// but CONFIG_MEM_SOFT_DIRTY is often off; this works wherever userfaultfd does.
//
// How it is used: the userfaultfd is created inside the tracked process (an injected
// userfaultfd(2), since a userfaultfd belongs to the mm of its creator) and taken with
// pidfd_getfd(2); every ioctl below then acts on that process's memory from the tracker.
// With WP_ASYNC a write to a protected page is resolved by the kernel at once: the writer
// never blocks, no message is queued, and the page is only marked written.
#ifndef CSSI_DIRTY_H
#define CSSI_DIRTY_H

#include <stdint.h>
#include <stddef.h>

// userfaultfd(2) flag: only faults from user mode reach the descriptor. It is what a
// process without CAP_SYS_PTRACE may create when vm.unprivileged_userfaultfd is 0, and
// asynchronous write-protection never delivers a fault anyway.
enum { CSSI_UFFD_USER_MODE_ONLY = 1 };

// One run of pages with the same categories, as PAGEMAP_SCAN returns them.
struct cssi_page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

// PAGE_IS_* categories of ioctl_pagemap_scan(2).
enum {
    CSSI_PAGE_IS_WPALLOWED = 1 << 0,
    CSSI_PAGE_IS_WRITTEN = 1 << 1,
    CSSI_PAGE_IS_FILE = 1 << 2,
    CSSI_PAGE_IS_PRESENT = 1 << 3,
    CSSI_PAGE_IS_SWAPPED = 1 << 4,
    CSSI_PAGE_IS_PFNZERO = 1 << 5,
    CSSI_PAGE_IS_HUGE = 1 << 6,
    CSSI_PAGE_IS_SOFT_DIRTY = 1 << 7,
    // A guard region's marker (madvise MADV_GUARD_INSTALL): Linux 6.15 on.
    CSSI_PAGE_IS_GUARD = 1 << 8,
};

// UFFDIO_API on a fresh userfaultfd, asking for asynchronous write-protection, including
// pages not populated yet (UFFD_FEATURE_WP_UNPOPULATED). Returns 0 or -errno (-EINVAL on a
// kernel without WP_ASYNC).
int cssi_uffd_enable_wp_async(int uffd);
// UFFDIO_REGISTER in write-protect mode over [start, start+len). Returns 0 or -errno.
int cssi_uffd_register_wp(int uffd, uint64_t start, uint64_t len);
// UFFDIO_UNREGISTER over [start, start+len). Returns 0 or -errno.
int cssi_uffd_unregister(int uffd, uint64_t start, uint64_t len);
// UFFDIO_WRITEPROTECT: protect (1) or unprotect (0) [start, start+len). Returns 0 or -errno.
int cssi_uffd_writeprotect(int uffd, uint64_t start, uint64_t len, int protect);

// PAGEMAP_SCAN over [start, end) for the pages written since they were last protected;
// with rearm, protects them again in the same walk (PM_SCAN_WP_MATCHING), so that no write
// falls between reading and re-protecting. Stores up to n regions; *walk_end is where the
// walk stopped (end, or earlier when vec filled up: call again from there).
// Returns the number of regions stored or -errno.
long cssi_pagemap_scan_written(int pagemap_fd, uint64_t start, uint64_t end, int rearm,
                               struct cssi_page_region *vec, size_t n, uint64_t *walk_end);

// PAGEMAP_SCAN over [start, end) for guard markers (PAGE_IS_GUARD). Returns 1 if there is
// one, 0 if none, or -errno (-EINVAL: a kernel that does not know the category, older than
// 6.15).
long cssi_pagemap_scan_guard(int pagemap_fd, uint64_t start, uint64_t end);

// Filling memory from outside (restore): a userfaultfd of the restored process, registered
// in missing mode over a freshly mapped anonymous area, and UFFDIO_COPY from a buffer of
// ours (the image file mapped). The kernel allocates each page and copies into it, with no
// zeroing first and no page fault per page, unlike read(2) into fresh memory.
// UFFDIO_API without features. Returns 0 or -errno.
int cssi_uffd_enable_plain(int uffd);
// UFFDIO_REGISTER in missing mode over [start, start+len). Returns 0 or -errno.
int cssi_uffd_register_missing(int uffd, uint64_t start, uint64_t len);
// UFFDIO_COPY of len bytes from src (ours) to dst (the process's). Returns the bytes copied
// (possibly fewer: call again for the rest) or -errno (-EEXIST: a page there exists already).
long cssi_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len);

// Filling memory after the process runs again (a migration's lazy restore, LazyMemory.swift):
// the same missing-mode registration, on a userfaultfd that also reports what the process
// does to its memory meanwhile (fork, mremap, madvise DONTNEED/REMOVE, munmap), so that a
// child gets its own copy of the pages still to come, a moved area is filled where it went,
// and pages the process threw away are not filled again.
// UFFDIO_API with UFFD_FEATURE_EVENT_FORK | EVENT_REMAP | EVENT_REMOVE | EVENT_UNMAP.
int cssi_uffd_enable_events(int uffd);

enum { CSSI_UFFD_NONE = 0, CSSI_UFFD_FAULT = 1, CSSI_UFFD_FORK = 2, CSSI_UFFD_REMAP = 3,
       CSSI_UFFD_REMOVE = 4, CSSI_UFFD_UNMAP = 5, CSSI_UFFD_OTHER = 6 };
// One message of the userfaultfd: FAULT a = address; FORK a = the child's userfaultfd (an
// fd of ours); REMAP a = from, b = to, c = len; REMOVE and UNMAP a = start, b = end.
struct cssi_uffd_event { int kind; uint64_t a, b, c; };
// Reads one message without blocking. Returns 1 (ev filled), 0 (none queued) or -errno.
int cssi_uffd_read_event(int uffd, struct cssi_uffd_event *ev);
// UFFDIO_ZEROPAGE over [dst, dst+len): a zero page for a fault on a page the image does not
// hold. Returns the bytes done or -errno (-EEXIST: it exists already).
long cssi_uffd_zeropage(int uffd, uint64_t dst, uint64_t len);

#endif
