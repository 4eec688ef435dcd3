/* PID 1 of the Bochs guest (see run.sh): mounts /proc, /sys, /dev and a tmpfs on /tmp, prints
 * the CPU model and flags, runs the programs listed under /bochs-run/ one after another (each
 * with its argv and the shared environment), relays their output to the second serial port,
 * stops at the first failure, prints the status and powers off, which makes Bochs exit.
 *
 * Files: /bochs-run/count (number of programs, decimal), /bochs-run/prog.N (the executable),
 * /bochs-run/argv.N and /bochs-run/env (NUL-separated strings). Markers written to the serial
 * port, one per line: BOCHS_CPU_MODEL:, BOCHS_CPU_FLAGS:, BOCHS_PROG_BEGIN N,
 * BOCHS_SIGNAL=S, BOCHS_EXIT_STATUS=S. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int out = 2;

static void wr(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(out, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void ws(const char *s) { wr(s, strlen(s)); }

/* A NUL-separated file as a NULL-terminated array (empty array if the file is missing). */
static char **read_list(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return calloc(1, sizeof(char *));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    size_t cnt = 0;
    for (size_t i = 0; i < len; i++) cnt += buf[i] == 0;
    char **v = calloc(cnt + 1, sizeof(char *));
    size_t k = 0, start = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == 0) {
            v[k++] = buf + start;
            start = i + 1;
        }
    return v;
}

static void print_cpu(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int model = 0;
    if (!f) {
        ws("BOCHS_CPU_FLAGS: <no /proc/cpuinfo>\n");
        return;
    }
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!c) continue;
        if (!strncmp(line, "model name", 10) && !model) {
            model = 1;
            ws("BOCHS_CPU_MODEL:");
            ws(c + 1);
        }
        if (!strncmp(line, "flags", 5)) {
            ws("BOCHS_CPU_FLAGS:");
            ws(c + 1);
            break;
        }
    }
    fclose(f);
}

static void power_off(void) {
    sync();
    reboot(RB_POWER_OFF); /* ACPI S5: Bochs quits */
    if (iopl(3) == 0) {   /* Bochs' shutdown port, in case ACPI is off */
        const char *s = "Shutdown";
        while (*s) outb(*s++, 0x8900);
    }
    for (;;) pause();
}

/* Runs program n with its output relayed to `out`; returns its status (128+S for signal S). */
static int run(int n, char **envp) {
    char prog[64], argvf[64], msg[160];
    snprintf(prog, sizeof prog, "/bochs-run/prog.%d", n);
    snprintf(argvf, sizeof argvf, "/bochs-run/argv.%d", n);
    char **argv = read_list(argvf);
    if (!argv[0]) {
        static char *d[2];
        d[0] = prog;
        argv = d;
    }
    int p[2];
    if (pipe(p) != 0) return 125;
    snprintf(msg, sizeof msg, "BOCHS_PROG_BEGIN %d\n", n);
    ws(msg);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        if (p[1] > 2) close(p[1]);
        if (out > 2) close(out);
        if (chdir("/tmp") != 0) _exit(126);
        execve(prog, argv, envp);
        dprintf(2, "BOCHS_INIT_ERROR: execve %s failed: %s\n", prog, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    char buf[4096], last = '\n';
    for (;;) {
        ssize_t r = read(p[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        wr(buf, (size_t)r);
        last = buf[r - 1];
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (last != '\n') ws("\n");
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) {
        snprintf(msg, sizeof msg, "BOCHS_SIGNAL=%d\n", WTERMSIG(st));
        ws(msg);
        return 128 + WTERMSIG(st);
    }
    return 255;
}

int main(void) {
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mkdir("/dev", 0755);
    mkdir("/tmp", 01777);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777");
    int fd = -1;
    for (int i = 0; i < 50 && fd < 0; i++) {
        fd = open("/dev/ttyS1", O_RDWR | O_NOCTTY);
        if (fd < 0) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
    }
    if (fd < 0) fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        struct termios t;
        if (tcgetattr(fd, &t) == 0) {
            cfmakeraw(&t);
            cfsetispeed(&t, B115200);
            cfsetospeed(&t, B115200);
            tcsetattr(fd, TCSANOW, &t);
        }
        out = fd;
    }
    print_cpu();
    char **count = read_list("/bochs-run/count");
    int progs = count[0] ? atoi(count[0]) : 0, status = progs > 0 ? 0 : 125;
    char **envp = read_list("/bochs-run/env");
    for (int n = 0; n < progs && status == 0; n++) status = run(n, envp);
    char msg[64];
    snprintf(msg, sizeof msg, "BOCHS_EXIT_STATUS=%d\n", status);
    ws(msg);
    tcdrain(out);
    power_off();
    return 0;
}
