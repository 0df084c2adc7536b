// CSSILinux, SysV IPC part: see include/cssi_ipc.h.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cssi_ipc.h"

#include <errno.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <mqueue.h>
#include <time.h>
#include <fcntl.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

// semctl(2): "the calling program must define this union".
union cssi_semun { int val; struct semid_ds *buf; unsigned short *array; };

#define RET(expr) do { long r_ = (long)(expr); return r_ < 0 ? -errno : (int)r_; } while (0)

static void perm_out(const struct ipc_perm *p, struct cssi_ipc_perm *o) {
    o->key = (int32_t)p->__key;
    o->uid = p->uid; o->gid = p->gid; o->cuid = p->cuid; o->cgid = p->cgid;
    o->mode = p->mode;
}

int cssi_ipc_msgget(int32_t key, int flags) { RET(msgget((key_t)key, flags)); }

int cssi_ipc_msq_stat(int id, struct cssi_ipc_msq_stat *out) {
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) < 0) return -errno;
    perm_out(&ds.msg_perm, &out->perm);
    out->qbytes = ds.msg_qbytes; out->qnum = ds.msg_qnum; out->cbytes = ds.__msg_cbytes;
    out->stime = ds.msg_stime; out->rtime = ds.msg_rtime; out->ctime = ds.msg_ctime;
    out->lspid = ds.msg_lspid; out->lrpid = ds.msg_lrpid;
    return 0;
}

int cssi_ipc_msq_set(int id, uint32_t uid, uint32_t gid, uint32_t mode, uint64_t qbytes) {
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) < 0) return -errno;
    ds.msg_perm.uid = uid; ds.msg_perm.gid = gid; ds.msg_perm.mode = mode & 0777;
    ds.msg_qbytes = qbytes;
    RET(msgctl(id, IPC_SET, &ds));
}

long cssi_ipc_msg_copy(int id, long index, void *buf, size_t textmax) {
    ssize_t n = msgrcv(id, buf, textmax, index, IPC_NOWAIT | MSG_COPY);
    return n < 0 ? -errno : n;
}

long cssi_ipc_msg_take(int id, void *buf, size_t textmax) {
    ssize_t n = msgrcv(id, buf, textmax, 0, IPC_NOWAIT);
    return n < 0 ? -errno : n;
}

int cssi_ipc_msgsnd(int id, const void *buf, size_t len) { RET(msgsnd(id, buf, len, IPC_NOWAIT)); }
int cssi_ipc_msq_rmid(int id) { RET(msgctl(id, IPC_RMID, NULL)); }

int cssi_ipc_semget(int32_t key, int nsems, int flags) { RET(semget((key_t)key, nsems, flags)); }

int cssi_ipc_sem_stat(int id, struct cssi_ipc_sem_stat *out) {
    struct semid_ds ds;
    union cssi_semun arg = { .buf = &ds };
    if (semctl(id, 0, IPC_STAT, arg) < 0) return -errno;
    perm_out(&ds.sem_perm, &out->perm);
    out->nsems = ds.sem_nsems; out->otime = ds.sem_otime; out->ctime = ds.sem_ctime;
    return 0;
}

int cssi_ipc_sem_set(int id, uint32_t uid, uint32_t gid, uint32_t mode) {
    struct semid_ds ds;
    union cssi_semun arg = { .buf = &ds };
    if (semctl(id, 0, IPC_STAT, arg) < 0) return -errno;
    ds.sem_perm.uid = uid; ds.sem_perm.gid = gid; ds.sem_perm.mode = mode & 0777;
    RET(semctl(id, 0, IPC_SET, arg));
}

int cssi_ipc_sem_getall(int id, uint16_t *values) {
    union cssi_semun arg = { .array = values };
    RET(semctl(id, 0, GETALL, arg));
}

int cssi_ipc_sem_setall(int id, const uint16_t *values) {
    union cssi_semun arg = { .array = (unsigned short *)values };
    RET(semctl(id, 0, SETALL, arg));
}

int cssi_ipc_sem_rmid(int id) { RET(semctl(id, 0, IPC_RMID)); }

int cssi_ipc_sem_getpid(int id, int num) { RET(semctl(id, num, GETPID)); }

int cssi_ipc_shmget(int32_t key, uint64_t size, int flags) { RET(shmget((key_t)key, (size_t)size, flags)); }

int cssi_ipc_shm_stat(int id, struct cssi_ipc_shm_stat *out) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) return -errno;
    perm_out(&ds.shm_perm, &out->perm);
    out->segsz = ds.shm_segsz; out->nattch = ds.shm_nattch;
    out->atime = ds.shm_atime; out->dtime = ds.shm_dtime; out->ctime = ds.shm_ctime;
    out->cpid = ds.shm_cpid; out->lpid = ds.shm_lpid;
    return 0;
}

int cssi_ipc_shm_set(int id, uint32_t uid, uint32_t gid, uint32_t mode) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) return -errno;
    ds.shm_perm.uid = uid; ds.shm_perm.gid = gid; ds.shm_perm.mode = mode & 0777;
    RET(shmctl(id, IPC_SET, &ds));
}

int cssi_ipc_shm_lock(int id, int lock) { RET(shmctl(id, lock ? SHM_LOCK : SHM_UNLOCK, NULL)); }

int cssi_ipc_shmat(int id, int flags, void **addr) {
    void *p = shmat(id, NULL, flags);
    if (p == (void *)-1) return -errno;
    *addr = p;
    return 0;
}

int cssi_ipc_shmdt(const void *addr) { RET(shmdt(addr)); }
int cssi_ipc_shm_rmid(int id) { RET(shmctl(id, IPC_RMID, NULL)); }
int cssi_ipc_mincore(void *addr, size_t len, unsigned char *vec) { RET(mincore(addr, len, vec)); }
int cssi_ipc_willneed(void *addr, size_t len) { RET(madvise(addr, len, MADV_WILLNEED)); }
int cssi_ipc_unshare_namespace(void) { RET(unshare(CLONE_NEWIPC)); }

int cssi_mq_open(const char *name, int oflag, unsigned int mode, long maxmsg, long msgsize) {
    struct mq_attr a = { .mq_maxmsg = maxmsg, .mq_msgsize = msgsize };
    RET(mq_open(name, oflag, (mode_t)mode, maxmsg > 0 ? &a : NULL));
}

int cssi_mq_getattr(int fd, long *flags, long *maxmsg, long *msgsize, long *curmsgs) {
    struct mq_attr a;
    if (mq_getattr(fd, &a) < 0) return -errno;
    *flags = a.mq_flags; *maxmsg = a.mq_maxmsg; *msgsize = a.mq_msgsize; *curmsgs = a.mq_curmsgs;
    return 0;
}

long cssi_mq_receive_now(int fd, void *buf, size_t len, unsigned int *prio) {
    struct timespec past = { 0, 0 };
    ssize_t n = mq_timedreceive(fd, buf, len, prio, &past);
    return n < 0 ? -errno : (long)n;
}

int cssi_mq_send_now(int fd, const void *buf, size_t len, unsigned int prio) {
    struct timespec past = { 0, 0 };
    RET(mq_timedsend(fd, buf, len, prio, &past));
}
