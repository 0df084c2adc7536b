// ssi-init: process 1 of a cluster application's own PID namespace.
//
// A cluster application runs in a PID namespace of its own, so that its processes keep
// their PIDs when it moves to a node where those numbers are taken (pid_namespaces(7)).
// Process 1 of a namespace is special: orphans are reparented to it, and it receives from
// outside only the signals it has a handler for. An application's own root process would
// then ignore a plain `kill PID` and collect zombies it never waits for; this small init
// stands in front of it instead:
//   - it starts the command as process 2, leader of a new session, with an empty signal
//     mask and default dispositions;
//   - it forwards the signals a user sends to the application (TERM, INT, HUP, ...) to
//     process 2;
//   - it reaps every orphan;
//   - it exits once no process is left, with the command's exit status (128+N when the
//     command was killed by signal N).
// It holds no state but its command's PID and, once the command has ended, its status.
// While the command runs, the checkpoint engine saves it as that state alone and a restart
// runs a new ssi-init that takes over (SSI_INIT_RESUME, ProcessImage.freshInit: no memory
// to save, move and rebuild inside a migration's freeze); otherwise it is saved and
// restored like any other process of the application.
//
// Usage: ssi-init [--proc] [--join CGROUP.PROCS]... [--wait-fd N] -- CMD ARGS...
//   --join   move into the cgroup whose cgroup.procs file is given, before the command starts
//   --wait-fd  read fd N until end of file (the launcher closed its end) before the command starts
//   --proc   make the mount namespace's propagation private and mount a fresh /proc for
//            this PID namespace, so that /proc/<getpid()> names the caller (the launcher
//            gives the application a mount namespace of its own with CLONE_NEWNS).
// Written in C so that the init's memory is a few pages, not a language runtime.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

// The signals a user or the cluster sends to an application, passed on to its command.
// SIGCHLD is ours; SIGKILL and SIGSTOP cannot be caught (and SIGKILL from outside the
// namespace kills process 1, hence every process of the application, by design).
static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM,
                                SIGWINCH, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPWR, SIGURG};

static void die(const char *what) {
    fprintf(stderr, "ssi-init: %s: %s\n", what, strerror(errno));
    exit(127);
}

static void mount_proc(void) {
    // mount_namespaces(7): a new mount namespace copies the propagation of its parent's
    // mounts; making it a slave first keeps our /proc from showing up on the node.
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) die("make / a slave mount");
    // proc(5): a procfs instance shows the PID namespace of the process that mounted it.
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("mount /proc");
}

/* The errno the child wrote to the close-on-exec pipe `fd` when exec failed, or 0 when the
 * pipe closed empty (the exec closed it: pipe2(2) O_CLOEXEC). Closes `fd`. */
static int exec_error(int fd) {
    int e = 0;
    ssize_t n;
    while ((n = read(fd, &e, sizeof(e))) < 0 && errno == EINTR) {}
    close(fd);
    return n == (ssize_t)sizeof(e) ? e : 0;
}

static pid_t start(char **argv, const sigset_t *none) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(report[0]);
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) sigaction(forwarded[i], &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigprocmask(SIG_SETMASK, none, NULL);
        setsid();
        execvp(argv[0], argv);
        int e = errno;
        (void)!write(report[1], &e, sizeof(e));
        _exit(127);
    }
    close(report[1]);
    int e = exec_error(report[0]);
    if (e != 0) {
        fprintf(stderr, "ssi-init: cannot start %s: %s\n", argv[0], strerror(e));
        exit(127);
    }
    return pid;
}

/* Moves this process into a cgroup by writing "0" to its cgroup.procs: cgroups(7) says 0
 * names the writer. Done before the command is forked, so that the whole application is
 * born in the group (a node's CPU limit in the local cluster, `ssi cluster up --cpus`). */
static int join(const char *procs) {
    FILE *f = fopen(procs, "w");
    if (!f || fputs("0\n", f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "ssi-init: cannot join the cgroup of %s: %s\n", procs, strerror(errno));
        return -1;
    }
    return 0;
}

/* Everything we wait for arrives through sigwaitinfo(2): blocked before the command is
 * forked, so that nothing is lost between the fork and the first wait. Returns the set. */
static sigset_t block_waited(void) {
    sigset_t waited;
    sigemptyset(&waited);
    sigaddset(&waited, SIGCHLD);
    for (size_t k = 0; k < sizeof(forwarded) / sizeof(forwarded[0]); k++) sigaddset(&waited, forwarded[k]);
    sigprocmask(SIG_BLOCK, &waited, NULL);
    return waited;
}

/* Once the command is reaped, its status lives in our memory only: our name says so
 * (/proc/1/comm), so that a checkpoint saves us whole from then on rather than as a
 * running command's init (FreshInit.detect), even if a later process gets PID 2. */
static void reaped(void) { prctl(PR_SET_NAME, "ssi-init-ended", 0, 0, 0); }

/* Waits for the command and every orphan, forwarding the signals a user sends, until no
 * process is left; returns the command's exit status as our own. `done`: the command was
 * reaped already (a resumed init whose command ended meanwhile), with `status`. */
static int wait_all(pid_t command, int done, int status) {
    sigset_t waited = block_waited();
    if (done) reaped();
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            if (p == command && !done) { status = st; done = 1; reaped(); }
        }
        if (p < 0 && errno == ECHILD) break;
        siginfo_t si;
        int sig = sigwaitinfo(&waited, &si);
        if (sig < 0 || sig == SIGCHLD) continue;
        if (!done) kill(command, sig);
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    // The restore shell (cssi_spawn_restore_shell) execs us as an empty process for the
    // restorer to fill; we run only if the restorer let go of it before taking over.
    if (argc == 2 && strcmp(argv[1], "--restore-stub") == 0) return 127;
    // A restart in place of a saved ssi-init (ProcessImage.freshInit): the restorer gave
    // this new one the saved fds, ids, signal mask and pending signals and lets it start
    // from its entry point; what the saved one knew is its command's PID, still running.
    // The options were acted on by the first one (its /proc, its cgroup, its wait): argv is
    // only shown again as it was.
    // Only with that command as our child: the variable in a user's environment at a
    // normal launch (we have no child yet, ECHILD) starts the command as usual.
    const char *resume = getenv("SSI_INIT_RESUME");
    if (resume) {
        pid_t command = (pid_t)atoi(resume);
        int st = 0;
        pid_t r = command >= 2 ? waitpid(command, &st, WNOHANG) : -1;
        if (r == 0 || r == command) {
            unsetenv("SSI_INIT_RESUME");
            // Ended between the restore and now: its status is ours already.
            return wait_all(command, r == command, st);
        }
    }
    int proc = 0, i = 1, wait_fd = -1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--proc") == 0) proc = 1;
        else if (strcmp(argv[i], "--join") == 0 && i + 1 < argc) { if (join(argv[++i]) != 0) return 127; }
        else if (strcmp(argv[i], "--wait-fd") == 0 && i + 1 < argc) wait_fd = atoi(argv[++i]);
        else { fprintf(stderr, "ssi-init: unknown option %s\n", argv[i]); return 127; }
    }
    if (i + 1 >= argc) { fprintf(stderr, "usage: ssi-init [--proc] [--join CGROUP.PROCS]... [--wait-fd N] -- CMD ARGS...\n"); return 127; }
    if (proc) mount_proc();
    // --wait-fd: the launcher has more to do before the command may run (every node must
    // route the application's own address first); it closes its end of the pipe then.
    if (wait_fd >= 0) {
        char c;
        for (;;) {
            ssize_t n = read(wait_fd, &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR)) break;
        }
        close(wait_fd);
    }

    // The command starts with an empty mask (start), ours blocking what we wait for.
    sigset_t none;
    sigemptyset(&none);
    block_waited();
    return wait_all(start(&argv[i + 1], &none), 0, 0);
}
