// CSSILinux, SysV IPC part: the calls SSIIPC makes on message queues, semaphore arrays and
// shared memory segments. semctl is variadic (Swift cannot call it), MSG_COPY and the *_STAT
// commands are only declared under _GNU_SOURCE, and glibc's struct layouts differ between
// architectures; so every call is wrapped here with plain fixed-width structs. Every function
// returns >= 0 on success or -errno. Symbols are prefixed `cssi_ipc_`.
#ifndef CSSI_IPC_H
#define CSSI_IPC_H

#include <stdint.h>
#include <stddef.h>

// The common part of struct ipc_perm (sysvipc(7)). `mode` keeps the kernel's extra bits:
// SHM_DEST (01000) and SHM_LOCKED (02000) for shared memory.
struct cssi_ipc_perm {
    int32_t key;
    uint32_t uid, gid, cuid, cgid;
    uint32_t mode;
};

struct cssi_ipc_msq_stat {
    struct cssi_ipc_perm perm;
    uint64_t qbytes, qnum, cbytes;
    int64_t stime, rtime, ctime;
    int32_t lspid, lrpid;
};

struct cssi_ipc_sem_stat {
    struct cssi_ipc_perm perm;
    uint64_t nsems;
    int64_t otime, ctime;
};

struct cssi_ipc_shm_stat {
    struct cssi_ipc_perm perm;
    uint64_t segsz, nattch;
    int64_t atime, dtime, ctime;
    int32_t cpid, lpid;
};

enum {
    CSSI_IPC_CREAT = 01000, CSSI_IPC_EXCL = 02000, CSSI_IPC_NOWAIT = 04000,
    CSSI_IPC_SHM_DEST = 01000, CSSI_IPC_SHM_LOCKED = 02000,
    CSSI_IPC_SHM_RDONLY = 010000,
};

// ---- message queues (msgget(2), msgctl(2), msgsnd(2), msgrcv(2)) ----------------------------
int cssi_ipc_msgget(int32_t key, int flags);
int cssi_ipc_msq_stat(int id, struct cssi_ipc_msq_stat *out);
// IPC_SET of owner, group, the 9 permission bits and msg_qbytes (above msgmnb needs CAP_SYS_RESOURCE).
int cssi_ipc_msq_set(int id, uint32_t uid, uint32_t gid, uint32_t mode, uint64_t qbytes);
// msgrcv(MSG_COPY | IPC_NOWAIT | MSG_NOERROR-free) of the message at position `index` (0 = oldest),
// without removing it (Linux 3.8, CONFIG_CHECKPOINT_RESTORE). `buf` is a struct msgbuf: a long
// mtype followed by up to `textmax` bytes. Returns the text length; -E2BIG if the text is longer
// than textmax; -ENOMSG past the last message; -ENOSYS without CONFIG_CHECKPOINT_RESTORE.
long cssi_ipc_msg_copy(int id, long index, void *buf, size_t textmax);
// msgrcv(msgtyp 0, IPC_NOWAIT): removes and returns the oldest message (msgrcv(2): "If msgtyp
// is 0, then the first message in the queue is read"). Unlike MSG_COPY, the buffer is not
// capped at msgmax. -E2BIG leaves the message in the queue; -ENOMSG when the queue is empty.
long cssi_ipc_msg_take(int id, void *buf, size_t textmax);
// msgsnd(IPC_NOWAIT) of a struct msgbuf whose text is `len` bytes.
int cssi_ipc_msgsnd(int id, const void *buf, size_t len);
int cssi_ipc_msq_rmid(int id);

// ---- semaphore arrays (semget(2), semctl(2)) -------------------------------------------------
int cssi_ipc_semget(int32_t key, int nsems, int flags);
int cssi_ipc_sem_stat(int id, struct cssi_ipc_sem_stat *out);
int cssi_ipc_sem_set(int id, uint32_t uid, uint32_t gid, uint32_t mode);
// GETALL / SETALL: `values` holds nsems entries (unsigned short, as semctl(2) has them).
int cssi_ipc_sem_getall(int id, uint16_t *values);
int cssi_ipc_sem_setall(int id, const uint16_t *values);
int cssi_ipc_sem_rmid(int id);
// GETPID: the process (in the caller's PID namespace) that last changed semaphore `num`,
// by semop or by its exit's SEM_UNDO adjustment; -errno on error.
int cssi_ipc_sem_getpid(int id, int num);

// ---- shared memory (shmget(2), shmctl(2), shmat(2)) -------------------------------------------
int cssi_ipc_shmget(int32_t key, uint64_t size, int flags);
int cssi_ipc_shm_stat(int id, struct cssi_ipc_shm_stat *out);
int cssi_ipc_shm_set(int id, uint32_t uid, uint32_t gid, uint32_t mode);
// SHM_LOCK (lock != 0) or SHM_UNLOCK.
int cssi_ipc_shm_lock(int id, int lock);
// shmat at a kernel-chosen address; *addr receives it.
int cssi_ipc_shmat(int id, int flags, void **addr);
int cssi_ipc_shmdt(const void *addr);
int cssi_ipc_shm_rmid(int id);

// mincore(2) over [addr, addr+len); vec receives one byte per page.
int cssi_ipc_mincore(void *addr, size_t len, unsigned char *vec);
// madvise(2) MADV_WILLNEED: on a shmem mapping it reads swapped-out pages back into the swap
// cache (mm/madvise.c, shmem_swapin_range), so that mincore(2) then reports them.
int cssi_ipc_willneed(void *addr, size_t len);

// unshare(CLONE_NEWIPC): the caller gets a fresh, empty IPC namespace (needs CAP_SYS_ADMIN).
int cssi_ipc_unshare_namespace(void);

// POSIX message queues (mq_overview(7)) in the calling thread's IPC namespace. mq_open takes
// the name with its leading '/'; maxmsg 0 opens without attributes. Each returns -errno on
// failure.
int cssi_mq_open(const char *name, int oflag, unsigned int mode, long maxmsg, long msgsize);
int cssi_mq_getattr(int fd, long *flags, long *maxmsg, long *msgsize, long *curmsgs);
// Receives one message without waiting (a timeout already past): its length, or -EAGAIN /
// -ETIMEDOUT when the queue is empty.
long cssi_mq_receive_now(int fd, void *buf, size_t len, unsigned int *prio);
// Sends one message without waiting.
int cssi_mq_send_now(int fd, const void *buf, size_t len, unsigned int prio);

#endif
