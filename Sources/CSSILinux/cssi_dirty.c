#include "cssi_dirty.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

// Debian 12's kernel headers (6.1) predate these; values from include/uapi/linux/fs.h and
// userfaultfd.h of Linux 6.7.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

struct cssi_pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};
_Static_assert(sizeof(struct cssi_pm_scan_arg) == 96, "struct pm_scan_arg is 12 u64");
_Static_assert(sizeof(struct cssi_page_region) == 24, "struct page_region is 3 u64");
#define CSSI_PAGEMAP_SCAN _IOWR('f', 16, struct cssi_pm_scan_arg)
#define CSSI_PM_SCAN_WP_MATCHING (1 << 0)
#define CSSI_PM_SCAN_CHECK_WPASYNC (1 << 1)

static int result(int r) { return r == 0 ? 0 : -errno; }

// UFFDIO_API handshake with these features (userfaultfd(2): once per userfaultfd).
static int uffd_api(int uffd, uint64_t features) {
    struct uffdio_api api;
    memset(&api, 0, sizeof(api));
    api.api = UFFD_API;
    api.features = features;
    return result(ioctl(uffd, UFFDIO_API, &api));
}

// UFFDIO_REGISTER of [start, start + len) in `mode` (MISSING, WP).
static int uffd_register(int uffd, uint64_t start, uint64_t len, uint64_t mode) {
    struct uffdio_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.range.start = start;
    reg.range.len = len;
    reg.mode = mode;
    return result(ioctl(uffd, UFFDIO_REGISTER, &reg));
}

int cssi_uffd_enable_wp_async(int uffd) { return uffd_api(uffd, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED); }

int cssi_uffd_register_wp(int uffd, uint64_t start, uint64_t len) { return uffd_register(uffd, start, len, UFFDIO_REGISTER_MODE_WP); }

int cssi_uffd_unregister(int uffd, uint64_t start, uint64_t len) {
    struct uffdio_range range = {.start = start, .len = len};
    return result(ioctl(uffd, UFFDIO_UNREGISTER, &range));
}

int cssi_uffd_writeprotect(int uffd, uint64_t start, uint64_t len, int protect) {
    struct uffdio_writeprotect wp;
    memset(&wp, 0, sizeof(wp));
    wp.range.start = start;
    wp.range.len = len;
    wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
    return result(ioctl(uffd, UFFDIO_WRITEPROTECT, &wp));
}

long cssi_pagemap_scan_written(int pagemap_fd, uint64_t start, uint64_t end, int rearm,
                               struct cssi_page_region *vec, size_t n, uint64_t *walk_end) {
    struct cssi_pm_scan_arg a;
    memset(&a, 0, sizeof(a));
    a.size = sizeof(a);
    // CHECK_WPASYNC makes the walk fail (EPERM) on a page that is not under asynchronous
    // write-protection instead of reporting it clean: a range we did not register is never
    // taken for unwritten.
    a.flags = CSSI_PM_SCAN_CHECK_WPASYNC | (rearm ? CSSI_PM_SCAN_WP_MATCHING : 0);
    a.start = start;
    a.end = end;
    a.vec = (uint64_t)(uintptr_t)vec;
    a.vec_len = n;
    a.category_mask = CSSI_PAGE_IS_WRITTEN;
    a.return_mask = CSSI_PAGE_IS_WRITTEN;
    long r = ioctl(pagemap_fd, CSSI_PAGEMAP_SCAN, &a);
    if (walk_end) *walk_end = a.walk_end;
    return r < 0 ? -errno : r;
}

long cssi_pagemap_scan_guard(int pagemap_fd, uint64_t start, uint64_t end) {
    struct cssi_pm_scan_arg a;
    struct cssi_page_region one;
    memset(&a, 0, sizeof(a));
    a.size = sizeof(a);
    a.start = start;
    a.end = end;
    a.vec = (uint64_t)(uintptr_t)&one;
    a.vec_len = 1;
    a.max_pages = 1;
    a.category_mask = CSSI_PAGE_IS_GUARD;
    a.return_mask = CSSI_PAGE_IS_GUARD;
    long r = ioctl(pagemap_fd, CSSI_PAGEMAP_SCAN, &a);
    return r < 0 ? -errno : (r > 0 ? 1 : 0);
}

int cssi_uffd_enable_plain(int uffd) { return uffd_api(uffd, 0); }

int cssi_uffd_register_missing(int uffd, uint64_t start, uint64_t len) { return uffd_register(uffd, start, len, UFFDIO_REGISTER_MODE_MISSING); }

long cssi_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len) {
    struct uffdio_copy c;
    memset(&c, 0, sizeof(c));
    c.dst = dst;
    c.src = (uint64_t)(uintptr_t)src;
    c.len = len;
    if (ioctl(uffd, UFFDIO_COPY, &c) == 0) return (long)c.copy;
    // On failure c.copy holds -errno, or the bytes done before an interruption (EAGAIN).
    if (c.copy > 0) return (long)c.copy;
    return -errno;
}

int cssi_uffd_enable_events(int uffd) {
    return uffd_api(uffd, UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP);
}

int cssi_uffd_read_event(int uffd, struct cssi_uffd_event *ev) {
    struct uffd_msg msg;
    ssize_t n = read(uffd, &msg, sizeof(msg));
    if (n < 0) return errno == EAGAIN ? 0 : -errno;
    if (n != sizeof(msg)) return -EIO;
    memset(ev, 0, sizeof(*ev));
    switch (msg.event) {
    case UFFD_EVENT_PAGEFAULT: ev->kind = CSSI_UFFD_FAULT; ev->a = msg.arg.pagefault.address; break;
    case UFFD_EVENT_FORK: ev->kind = CSSI_UFFD_FORK; ev->a = msg.arg.fork.ufd; break;
    case UFFD_EVENT_REMAP: ev->kind = CSSI_UFFD_REMAP; ev->a = msg.arg.remap.from; ev->b = msg.arg.remap.to; ev->c = msg.arg.remap.len; break;
    case UFFD_EVENT_REMOVE: ev->kind = CSSI_UFFD_REMOVE; ev->a = msg.arg.remove.start; ev->b = msg.arg.remove.end; break;
    case UFFD_EVENT_UNMAP: ev->kind = CSSI_UFFD_UNMAP; ev->a = msg.arg.remove.start; ev->b = msg.arg.remove.end; break;
    default: ev->kind = CSSI_UFFD_OTHER; break;
    }
    return 1;
}

long cssi_uffd_zeropage(int uffd, uint64_t dst, uint64_t len) {
    struct uffdio_zeropage z;
    memset(&z, 0, sizeof(z));
    z.range.start = dst;
    z.range.len = len;
    if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0) return (long)z.zeropage;
    if (z.zeropage > 0) return (long)z.zeropage;
    return -errno;
}
