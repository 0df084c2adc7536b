// A SysV segment removed (IPC_RMID) while attached, in an IPC namespace of the application's
// own: after restart it is attached, keeps its content, and is marked for removal again (it
// came back unmarked, and would have outlived the application).
#include "fixture.h"
#include <sched.h>
#include <sys/ipc.h>
#include <sys/shm.h>
int main(void) {
    if (unshare(CLONE_NEWIPC)) return 4;
    int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    char *p = shmat(id, NULL, 0); strcpy(p, "kept");
    shmctl(id, IPC_RMID, NULL);
    fixture_ready(); fixture_wait();
    struct shmid_ds ds; int r = shmctl(id, IPC_STAT, &ds);
    EXPECT(r == 0 && (ds.shm_perm.mode & SHM_DEST), "segment %d: r %d mode %o: not marked for removal", id, r, ds.shm_perm.mode);
    EXPECT(!strcmp(p, "kept"), "content");
    return fixture_finish();
}
