/* attack: the sandbox tests' multi-call attack tool, built by builder-cli/tests/sandbox.rs
 * with `cc -static -O1` and COPY'd into a busybox image. argv[1] selects the attack; every
 * result is one line "attack: NAME RESULT" on stdout, RESULT being "ok" or an errno name
 * (ENOENT, EPERM, ...), so the test can parse the build log. None of the attacks has a
 * lasting effect on the host when the sandbox fails: probes open files without writing,
 * and syscalls get arguments that the kernel rejects after its permission checks.
 *
 *   attack chroot-escape MARKER  mkdir x; chroot x; chdir .. 30 times; chroot .; then
 *                                create /tmp/MARKER, print /etc/hostname and list /
 *   attack syscalls              keyctl, add_key, unshare(NEWUSER|NEWNS), bpf,
 *                                perf_event_open, init_module
 *   attack ptrace PID            ptrace(PTRACE_ATTACH, PID), then kill(PID, SIGKILL)
 *   attack open-r PATH...        open(O_RDONLY), read up to 64 KiB: "ok BYTES" or errno
 *   attack open-w PATH...        open(O_WRONLY) and close, writing nothing
 *   attack status                the capability sets and the seccomp mode as the kernel
 *                                reports them to the process (capget, prctl), lines
 *                                "attack: CapEff: HEX" ... "attack: Seccomp: N", without /proc
 *   attack background SECONDS    leaves `sleep SECONDS` running in the background (its own
 *                                session, stdio closed) and returns once it has been exec'd
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc, int err) {
  if (rc < 0)
    printf("attack: %s %s\n", name, strerrorname_np(err) ? strerrorname_np(err) : "E?");
  else
    printf("attack: %s ok\n", name);
  fflush(stdout);
}

static int chroot_escape(const char *marker) {
  long rc;
  mkdir("x", 0755);
  rc = chroot("x");
  report("chroot", rc, errno);
  for (int i = 0; i < 30; i++)
    chdir("..");
  rc = chroot(".");
  report("chroot-dot", rc, errno);

  char path[4096];
  snprintf(path, sizeof path, "/tmp/%s", marker);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  report("marker", fd, errno);
  if (fd >= 0)
    close(fd);

  char buf[256] = {0};
  fd = open("/etc/hostname", O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0)
      buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    close(fd);
  }
  printf("attack: etc-hostname [%s]\n", buf);

  DIR *d = opendir("/");
  printf("attack: root-listing");
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
        printf(" %s", e->d_name);
    closedir(d);
  }
  printf("\n");
  fflush(stdout);
  return 0;
}

static int syscalls(void) {
  long rc;
  /* KEYCTL_GET_KEYRING_ID of the session keyring, without creating it. */
  rc = syscall(SYS_keyctl, 0, -3, 0);
  report("keyctl", rc, errno);
  /* A key type that does not exist: ENODEV after the permission checks. */
  rc = syscall(SYS_add_key, "ocibuild-no-such-type", "desc", "x", 1, -2);
  report("add_key", rc, errno);
  rc = unshare(CLONE_NEWUSER | CLONE_NEWNS);
  report("unshare", rc, errno);
  /* BPF_MAP_CREATE without attributes: EINVAL/EFAULT when allowed. */
  rc = syscall(SYS_bpf, 0, NULL, 0);
  report("bpf", rc, errno);
  /* No attributes: EFAULT when allowed. */
  rc = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
  report("perf_event_open", rc, errno);
  /* No image: EFAULT/ENOEXEC when allowed. */
  rc = syscall(SYS_init_module, NULL, 0, "");
  report("init_module", rc, errno);
  return 0;
}

static int trace(const char *pid_text) {
  pid_t pid = (pid_t)atol(pid_text);
  long rc = ptrace(PTRACE_ATTACH, pid, NULL, NULL);
  report("ptrace-attach", rc, errno);
  if (rc == 0)
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
  rc = kill(pid, SIGKILL);
  report("kill", rc, errno);
  return 0;
}

static int open_paths(int argc, char **argv, int flags) {
  for (int i = 2; i < argc; i++) {
    int fd = open(argv[i], flags);
    if (fd < 0) {
      report(argv[i], -1, errno);
      continue;
    }
    if (flags == O_RDONLY) {
      static char buf[65536];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0)
        report(argv[i], -1, errno);
      else
        printf("attack: %s ok %zd\n", argv[i], n);
    } else {
      printf("attack: %s ok\n", argv[i]);
    }
    fflush(stdout);
    close(fd);
  }
  return 0;
}

static int status(void) {
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &head, data) < 0) {
    report("capget", -1, errno);
    return 1;
  }
  unsigned long long inh = data[0].inheritable | (unsigned long long)data[1].inheritable << 32;
  unsigned long long prm = data[0].permitted | (unsigned long long)data[1].permitted << 32;
  unsigned long long eff = data[0].effective | (unsigned long long)data[1].effective << 32;
  unsigned long long bnd = 0, amb = 0;
  for (int cap = 0; cap < 64; cap++) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
      bnd |= 1ULL << cap;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1)
      amb |= 1ULL << cap;
  }
  printf("attack: CapInh: %016llx\nattack: CapPrm: %016llx\nattack: CapEff: %016llx\n"
         "attack: CapBnd: %016llx\nattack: CapAmb: %016llx\nattack: Seccomp: %d\n",
         inh, prm, eff, bnd, amb, prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
  fflush(stdout);
  return 0;
}

static int background(const char *seconds) {
  /* The write end closes when the grandchild execs (or exits): EOF is the handshake. */
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0)
    return 1;
  pid_t child = fork();
  if (child == 0) {
    if (fork() != 0)
      _exit(0);
    setsid();
    close(fds[0]);
    close(0);
    close(1);
    close(2);
    execl("/bin/sleep", "sleep", seconds, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char c;
  while (read(fds[0], &c, 1) > 0)
    ;
  waitpid(child, NULL, 0);
  printf("attack: background started\n");
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "status"))
    return status();
  if (argc >= 3 && !strcmp(argv[1], "background"))
    return background(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "chroot-escape"))
    return chroot_escape(argv[2]);
  if (argc >= 2 && !strcmp(argv[1], "syscalls"))
    return syscalls();
  if (argc >= 3 && !strcmp(argv[1], "ptrace"))
    return trace(argv[2]);
  if (argc >= 2 && !strcmp(argv[1], "open-r"))
    return open_paths(argc, argv, O_RDONLY);
  if (argc >= 2 && !strcmp(argv[1], "open-w"))
    return open_paths(argc, argv, O_WRONLY);
  fprintf(stderr, "usage: attack chroot-escape MARKER | syscalls | ptrace PID | open-r PATH... |\n"
                  "       open-w PATH... | status | background SECONDS\n");
  return 2;
}
