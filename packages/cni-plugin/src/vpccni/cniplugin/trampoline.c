/*
 * The executable a container runtime runs as /opt/cni/bin/aws-cni (and every other standalone vpccni CNI
 * executable): it starts the interpreter that travels with it, so the host needs no Python and no C library.
 *
 * Built static against musl (`musl-gcc -static -Os`, see standalone.py: an exec of it costs ~0.07 ms, one
 * linked with glibc's static library ~0.35 ms), it is installed as <dir>/<name> in a versioned
 * directory that also holds the interpreter, its loader and libraries, and <name>.pyc (the shim's code); the
 * host's /opt/cni/bin/<name> is a symlink to it. It execs
 *
 *     <dir>/lib/ld.so --inhibit-cache --library-path <dir>/lib <dir>/bin/python3 -I -S <dir>/<name>.pyc ARGS
 *
 * with the runtime's environment plus LC_ALL=C (no locale data from the host: the interpreter runs in UTF-8
 * mode), TZ=UTC0 and TZDIR=<dir>/zoneinfo (no time zone file from the host; the shim logs in UTC).
 * <dir> is where the kernel found this file (/proc/self/exe, symlinks resolved), else argv[0] resolved.
 * When that fails, the runtime gets a CNI error (JSON on stdout, exit 1) that says what to do.
 *
 * As egress-cni with CNI_COMMAND=ADD it first reads stdin and lets egressfast.c answer without the
 * interpreter when ipamd already wired the egress in aws-cni's ADD (the common case); otherwise the bytes
 * read go to the interpreter as its stdin (a memfd), so the shim sees exactly what the runtime sent.
 */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "egressfast.h"

#define PINNED_ENV 3

/* The spec's error JSON; `detail` is quoted as a JSON string. */
static void fail(const char *what, const char *detail, int err) {
    char buf[3 * PATH_MAX];
    size_t n = 0;
    const char *reason = err ? strerror(err) : "";
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "{\"cniVersion\":\"1.1.0\",\"code\":999,\"msg\":\"vpccni CNI executable: %s: ", what);
    for (const char *p = detail; *p && n < sizeof buf - 8; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "\\u%04x", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    snprintf(buf + n, sizeof buf - n,
             "%s%s; restart the aws-node pod to install it again\"}\n",
             err ? ": " : "", reason);
    (void)!write(1, buf, strlen(buf));
    _exit(1);
}

static void join(char *out, const char *dir, const char *tail) {
    if ((size_t)snprintf(out, PATH_MAX, "%s/%s", dir, tail) >= PATH_MAX) {
        fail("path too long", dir, 0);
    }
}

/* Up to EGRESS_MAX_STDIN + 1 bytes of stdin (the shim reads no more either); NULL when there is no stdin. */
static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16;
    char *data = malloc(cap);
    *len = 0;
    while (data != NULL && *len <= EGRESS_MAX_STDIN) {
        if (*len == cap) {
            cap *= 2;
            char *grown = realloc(data, cap);
            if (grown == NULL) {
                break;
            }
            data = grown;
        }
        size_t want = cap - *len;
        if (want > EGRESS_MAX_STDIN + 1 - *len) {
            want = EGRESS_MAX_STDIN + 1 - *len;
        }
        ssize_t n = read(0, data + *len, want);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n < 0 && *len == 0) { /* closed or unreadable: left as it is for the shim */
                free(data);
                return NULL;
            }
            break;
        }
        *len += (size_t)n;
    }
    if (data == NULL) {
        fail("out of memory", "reading stdin", errno);
    }
    return data;
}

/* The bytes already read become the interpreter's stdin. */
static void replay_stdin(const char *data, size_t len) {
    int fd = memfd_create("egress-cni-stdin", MFD_CLOEXEC);
    if (fd < 0) {
        fail("cannot keep its input for the interpreter", "memfd_create", errno);
    }
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, data + done, len - done);
        if (n <= 0) {
            fail("cannot keep its input for the interpreter", "write", errno);
        }
        done += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0) {
        fail("cannot keep its input for the interpreter", "dup2", errno);
    }
    close(fd);
}

static void egress_fast_path(char **envp) {
    const char *command = getenv("CNI_COMMAND");
    if (command == NULL || strcmp(command, "ADD") != 0) {
        return;
    }
    size_t len;
    char *input = read_stdin(&len);
    if (input == NULL) {
        return;
    }
    int status = egress_answer(envp, input, len);
    if (status >= 0) {
        _exit(status);
    }
    replay_stdin(input, len);
    free(input);
}

int main(int argc, char **argv, char **envp) {
    char dir[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (len > 0) {
        dir[len] = '\0';
    } else if (argc < 1 || realpath(argv[0], dir) == NULL) {
        fail("cannot find its own location", argc > 0 ? argv[0] : "", errno);
    }
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash[1] == '\0') {
        fail("unexpected location", dir, 0);
    }
    *slash = '\0';
    if (strcmp(slash + 1, "egress-cni") == 0) {
        egress_fast_path(envp);
    }
    char name[NAME_MAX + 8];
    if ((size_t)snprintf(name, sizeof name, "%s.pyc", slash + 1) >= sizeof name) {
        fail("name too long", slash + 1, 0);
    }

    char loader[PATH_MAX], libdir[PATH_MAX], python[PATH_MAX], code[PATH_MAX], zoneinfo[PATH_MAX];
    join(loader, dir, "lib/ld.so");
    join(libdir, dir, "lib");
    join(python, dir, "bin/python3");
    join(code, dir, name);
    join(zoneinfo, dir, "zoneinfo");

    /* The runtime's environment without the variables pinned below, then those. */
    size_t count = 0;
    while (envp[count] != NULL) {
        count++;
    }
    char **env = calloc(count + PINNED_ENV + 1, sizeof *env);
    char tzdir[PATH_MAX + 8];
    snprintf(tzdir, sizeof tzdir, "TZDIR=%s", zoneinfo);
    if (env == NULL) {
        fail("out of memory", "", errno);
    }
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (strncmp(envp[i], "LC_ALL=", 7) != 0 && strncmp(envp[i], "TZ=", 3) != 0 &&
            strncmp(envp[i], "TZDIR=", 6) != 0) {
            env[n++] = envp[i];
        }
    }
    env[n++] = "LC_ALL=C";
    env[n++] = "TZ=UTC0";
    env[n++] = tzdir;
    env[n] = NULL;

    char **args = calloc((size_t)argc + 9, sizeof *args);
    if (args == NULL) {
        fail("out of memory", "", errno);
    }
    size_t a = 0;
    args[a++] = loader;
    args[a++] = "--inhibit-cache";
    args[a++] = "--library-path";
    args[a++] = libdir;
    args[a++] = python;
    args[a++] = "-I";
    args[a++] = "-S";
    args[a++] = code;
    for (int i = 1; i < argc; i++) {
        args[a++] = argv[i];
    }
    args[a] = NULL;
    /* A missing file would otherwise surface as the loader's or the interpreter's message on stderr. */
    if (access(python, X_OK) != 0) {
        fail("its interpreter is missing", python, errno);
    }
    if (access(code, R_OK) != 0) {
        fail("its code is missing", code, errno);
    }
    execve(loader, args, env);
    fail("cannot start its interpreter", loader, errno);
    return 1;
}
