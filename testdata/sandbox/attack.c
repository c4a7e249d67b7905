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
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
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

int main(int argc, char **argv) {
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
  fprintf(stderr, "usage: attack chroot-escape MARKER | syscalls | ptrace PID | open-r PATH... | open-w PATH...\n");
  return 2;
}
