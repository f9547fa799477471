/*
 * egress-cni's ADD answered without the interpreter (see egressfast.h).
 *
 * Each check below mirrors one the Python shim makes on this path (environ.py, netconf.py, egress.py,
 * main.py), in its accepting direction only: a call passes here only when the shim would answer it with
 * prevResult, and then gets the same bytes on stdout and the same log line. Whatever the shim would reject,
 * or anything this code does not reason about (non-ASCII, escapes, floats, a missing log folder, a log file
 * due for rotation), returns -1 and the shim runs as before. The unit tests hold the two to the same answers
 * (test_egress_fastpath.py).
 */
#include "egressfast.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jsonscan.h"

#define MAX_ID 1024
#define MAX_PATH 4096
#define MAX_CNI_ARGS 4096
#define MAX_K8S_VALUE 253
#define MAX_NAME 253
#define LOG_MAX_BYTES (100L * 1024 * 1024) /* pluginlog.MAX_BYTES: from there on the shim rotates */

static const char *const SUPPORTED[] = {"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
static const char *const LOG_LEVELS[] = {"debug", "info", "warn", "warning", "error", "fatal", "panic"};
static const char *const K8S_KEYS[] = {"K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID",
                                       "K8S_POD_UID"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *env_get(char **envp, const char *name) {
    size_t len = strlen(name);
    for (char **e = envp; *e != NULL; e++) {
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') {
            return *e + len + 1; /* the first one, as Python's os.environ keeps */
        }
    }
    return NULL;
}

static int is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A letter or digit, then letters, digits, '_', '.' or '-' (container IDs, network names). */
static int is_name(const char *s, size_t len, size_t max) {
    if (len == 0 || len > max || !is_alnum(s[0])) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') {
            return 0;
        }
    }
    return 1;
}

static int is_printable(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

static int is_ifname(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > 15 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c > 0x7e || c == '/' || c == ':') {
            return 0;
        }
    }
    return 1;
}

static int is_one_of(const char *s, size_t len, const char *const *words, size_t count, int any_case) {
    for (size_t i = 0; i < count; i++) {
        int differs = any_case ? strncasecmp(s, words[i], len) : strncmp(s, words[i], len);
        if (strlen(words[i]) == len && differs == 0) {
            return 1;
        }
    }
    return 0;
}

/* CNI_ARGS as environ.parse_cni_args reads it: KEY=VALUE pairs; the last of a key counts. */
static int cni_args_ok(const char *args) {
    size_t total = strlen(args);
    if (total > MAX_CNI_ARGS || !is_printable(args, total)) {
        return 0;
    }
    const char *ignore = "false";
    size_t ignore_len = 5;
    int unknown = 0;
    const char *values[COUNT(K8S_KEYS)] = {0};
    size_t lens[COUNT(K8S_KEYS)] = {0};
    for (const char *item = args; *item;) {
        size_t len = strcspn(item, ";");
        const char *eq = memchr(item, '=', len);
        if (len > 0) {
            if (eq == NULL || eq == item) {
                return 0;
            }
            size_t key_len = (size_t)(eq - item), value_len = len - key_len - 1;
            size_t k = 0;
            while (k < COUNT(K8S_KEYS) && !is_one_of(item, key_len, &K8S_KEYS[k], 1, 0)) {
                k++;
            }
            if (k < COUNT(K8S_KEYS)) {
                values[k] = eq + 1;
                lens[k] = value_len;
            } else if (key_len == 13 && strncmp(item, "IgnoreUnknown", 13) == 0) {
                ignore = eq + 1;
                ignore_len = value_len;
            } else {
                unknown = 1;
            }
        }
        item += len + (item[len] == ';');
    }
    static const char *const booleans[] = {"1", "true", "0", "false"};
    if (!is_one_of(ignore, ignore_len, booleans, 4, 1)) {
        return 0;
    }
    if (unknown && !is_one_of(ignore, ignore_len, booleans, 2, 1)) {
        return 0;
    }
    for (size_t k = 0; k < COUNT(K8S_KEYS); k++) {
        if (lens[k] > MAX_K8S_VALUE || (values[k] && !is_printable(values[k], lens[k]))) {
            return 0;
        }
    }
    return 1;
}

/* environ.read_environment for ADD. */
static int environment_ok(char **envp) {
    const char *id = env_get(envp, "CNI_CONTAINERID"), *netns = env_get(envp, "CNI_NETNS");
    const char *ifname = env_get(envp, "CNI_IFNAME"), *path = env_get(envp, "CNI_PATH");
    const char *args = env_get(envp, "CNI_ARGS");
    return id != NULL && is_name(id, strlen(id), MAX_ID) && netns != NULL && netns[0] == '/' &&
           strlen(netns) <= MAX_PATH && ifname != NULL && is_ifname(ifname) &&
           (path == NULL || strlen(path) <= MAX_PATH) && (args == NULL || cni_args_ok(args));
}

/* versions.canonical: "0.4" -> "0.4.0"; 0 for what it rejects (and for parts of more than 9 digits). */
static int canonical_version(const struct jdoc *doc, int node, char out[32]) {
    if (!json_is(doc, node, J_STRING) || doc->nodes[node].len == 0 || doc->nodes[node].len > 32) {
        return 0;
    }
    const char *s = doc->text + doc->nodes[node].start;
    size_t len = doc->nodes[node].len, i = 0;
    unsigned long parts[3] = {0, 0, 0};
    for (int part = 0; part < 3; part++) {
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 9) {
            parts[part] = parts[part] * 10 + (unsigned long)(s[i++] - '0');
            digits++;
        }
        if (digits == 0) {
            return 0;
        }
        if (i == len) {
            snprintf(out, 32, "%lu.%lu.%lu", parts[0], parts[1], parts[2]);
            return 1;
        }
        if (s[i++] != '.') {
            return 0;
        }
    }
    return 0;
}

/* A string of at most `max` bytes, or absent or null (then `*value` is NULL). */
static int optional_string(const struct jdoc *doc, int node, size_t max, const char **value, size_t *len) {
    *value = NULL;
    *len = 0;
    if (node < 0 || doc->nodes[node].type == J_NULL) {
        return 1;
    }
    if (!json_is(doc, node, J_STRING) || doc->nodes[node].len > max) {
        return 0;
    }
    *value = doc->text + doc->nodes[node].start;
    *len = doc->nodes[node].len;
    return 1;
}

static int absent_or_null(const struct jdoc *doc, int node) { return node < 0 || json_is(doc, node, J_NULL); }

/* An optional path key (cniSocket, delQueueDir): absent, null, empty or absolute. */
static int path_ok(const struct jdoc *doc, int root, const char *key) {
    const char *s;
    size_t len;
    return optional_string(doc, json_member(doc, root, key), MAX_PATH, &s, &len) && (len == 0 || s[0] == '/');
}

static int veth_prefix_ok(const struct jdoc *doc, int root) {
    static const char *const reserved[] = {"eth", "vlan", "lo"};
    const char *s;
    size_t len;
    if (!optional_string(doc, json_member(doc, root, "vethPrefix"), 4, &s, &len)) {
        return 0;
    }
    if (len == 0) {
        return 1;
    }
    if (is_one_of(s, len, reserved, COUNT(reserved), 0)) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') {
            return 0;
        }
    }
    return 1;
}

static int runtime_config_ok(const struct jdoc *doc, int root) {
    int runtime = json_member(doc, root, "runtimeConfig");
    if (absent_or_null(doc, runtime)) {
        return 1;
    }
    if (!json_is(doc, runtime, J_OBJECT)) {
        return 0;
    }
    int annotations = json_member(doc, runtime, "io.kubernetes.cri.pod-annotations");
    if (!absent_or_null(doc, annotations)) {
        if (!json_is(doc, annotations, J_OBJECT)) {
            return 0;
        }
        for (int m = doc->nodes[annotations].child; m >= 0; m = doc->nodes[m].next) {
            if (!json_is(doc, m, J_STRING)) {
                return 0;
            }
        }
    }
    int ports = json_member(doc, runtime, "portMappings");
    return !json_truthy(doc, json_member(doc, runtime, "ips")) &&
           !json_truthy(doc, json_member(doc, runtime, "mac")) &&
           (absent_or_null(doc, ports) || json_is(doc, ports, J_ARRAY));
}

static int attachments_ok(const struct jdoc *doc, int root) {
    int list = json_member(doc, root, "cni.dev/valid-attachments");
    if (absent_or_null(doc, list)) {
        return 1;
    }
    if (!json_is(doc, list, J_ARRAY)) {
        return 0;
    }
    for (int item = doc->nodes[list].child; item >= 0; item = doc->nodes[item].next) {
        if (!json_is(doc, json_member(doc, item, "containerID"), J_STRING) ||
            !json_is(doc, json_member(doc, item, "ifname"), J_STRING)) {
            return 0;
        }
    }
    return 1;
}

/* How the shim logs: to stderr (`path` NULL) or appended to the file; `level` is what the info line needs. */
struct log_target {
    const char *path; /* NUL-terminated copy, or NULL for stderr */
    int info;         /* the level lets an info line through */
};

/* netconf.parse_netconf's checks, the log settings kept for the answer. */
static int netconf_ok(const struct jdoc *doc, int root, char version[32], struct log_target *log,
                      char *path_buf) {
    if (!json_is(doc, root, J_OBJECT) || json_member(doc, root, "cniVersions") >= 0 ||
        !canonical_version(doc, json_member(doc, root, "cniVersion"), version) ||
        !is_one_of(version, strlen(version), SUPPORTED, COUNT(SUPPORTED), 0)) {
        return 0;
    }
    const char *s;
    size_t len;
    if (!optional_string(doc, json_member(doc, root, "pluginLogFile"), MAX_PATH, &s, &len)) {
        return 0;
    }
    log->path = NULL;
    if (len == 6 && strncasecmp(s, "stderr", 6) == 0) {
        len = 0;
    } else if (len > 0 && s[0] != '/') {
        return 0; /* relative, or stdout */
    }
    if (len > 0) {
        memcpy(path_buf, s, len);
        path_buf[len] = '\0';
        log->path = path_buf;
    }
    if (!optional_string(doc, json_member(doc, root, "pluginLogLevel"), 16, &s, &len) ||
        (len > 0 && !is_one_of(s, len, LOG_LEVELS, COUNT(LOG_LEVELS), 1))) {
        return 0;
    }
    log->info = len == 0 || is_one_of(s, len, LOG_LEVELS, 2, 1); /* debug or info */
    static const char *const modes[] = {"strict", "standard"};
    if (!optional_string(doc, json_member(doc, root, "podSGEnforcingMode"), 16, &s, &len) ||
        (len > 0 && !is_one_of(s, len, modes, 2, 0))) {
        return 0;
    }
    int name = json_member(doc, root, "name");
    return json_is(doc, name, J_STRING) &&
           is_name(doc->text + doc->nodes[name].start, doc->nodes[name].len, MAX_NAME) &&
           veth_prefix_ok(doc, root) && runtime_config_ok(doc, root) && path_ok(doc, root, "cniSocket") &&
           path_ok(doc, root, "delQueueDir") && attachments_ok(doc, root);
}

/* egress.check_entry and egress.pod_ifname: 1 with the pod end's name, 0 for a malformed entry. */
static int entry_ok(const struct jdoc *doc, int root, const char **pod_ifname) {
    int mtu = json_member(doc, root, "mtu");
    if (!absent_or_null(doc, mtu) && !json_is(doc, mtu, J_NUMBER)) {
        if (!json_is(doc, mtu, J_STRING)) {
            return 0;
        }
        for (size_t i = 0; i < doc->nodes[mtu].len; i++) {
            char c = doc->text[doc->nodes[mtu].start + i];
            if (c < '0' || c > '9') {
                return 0;
            }
        }
    }
    int node_ip = json_member(doc, root, "nodeIP");
    if (json_truthy(doc, node_ip) && !json_is(doc, node_ip, J_STRING)) {
        return 0;
    }
    int family = json_truthy(doc, node_ip) ? node_ip : -1;
    int ipam = json_member(doc, root, "ipam");
    if (json_truthy(doc, ipam)) {
        if (!json_is(doc, ipam, J_OBJECT)) {
            return 0;
        }
        int ranges = json_member(doc, ipam, "ranges");
        if (json_truthy(doc, ranges)) {
            int first = json_is(doc, ranges, J_ARRAY) ? doc->nodes[ranges].child : -1;
            int range = json_is(doc, first, J_ARRAY) ? doc->nodes[first].child : -1;
            int subnet = json_member(doc, range, "subnet");
            if (!json_is(doc, subnet, J_STRING)) {
                return 0;
            }
            const char *text = doc->text + doc->nodes[subnet].start;
            size_t slashes = 0;
            for (size_t i = 0; i < doc->nodes[subnet].len; i++) {
                slashes += text[i] == '/';
            }
            if (slashes != 1) {
                return 0;
            }
            family = family >= 0 ? family : subnet;
        }
    }
    int v6 = family >= 0 && memchr(doc->text + doc->nodes[family].start, ':', doc->nodes[family].len) != NULL;
    *pod_ifname = v6 ? "v6if0" : "v4if0";
    return 1;
}

static int enabled(const struct jdoc *doc, int root) {
    int value = json_member(doc, root, "enabled");
    return json_is(doc, value, J_TRUE) ||
           (json_is(doc, value, J_STRING) && doc->nodes[value].len == 4 &&
            strncasecmp(doc->text + doc->nodes[value].start, "true", 4) == 0);
}

/* egress.wired_result: prevResult, in the config's version, lists the pod end with its sandbox. */
static int wired(const struct jdoc *doc, int prev, const char *version, const char *pod_ifname) {
    char prev_version[32];
    if (!canonical_version(doc, json_member(doc, prev, "cniVersion"), prev_version) ||
        strcmp(prev_version, version) != 0) {
        return 0;
    }
    int interfaces = json_member(doc, prev, "interfaces");
    if (!json_is(doc, interfaces, J_ARRAY)) {
        return 0;
    }
    for (int i = doc->nodes[interfaces].child; i >= 0; i = doc->nodes[i].next) {
        if (json_equals(doc, json_member(doc, i, "name"), pod_ifname) &&
            json_truthy(doc, json_member(doc, i, "sandbox"))) {
            return 1;
        }
    }
    return 0;
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0) {
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The log file opened as pluginlog.PluginLog opens it; -1 when the shim must do it (folder to create,
 * file to rotate, or an error it reports its own way). */
static int open_log(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || st.st_size >= LOG_MAX_BYTES)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* pluginlog.PluginLog.log's line for main._egress_answered. */
static void log_done(int fd, const char *container_id) {
    struct timespec now;
    struct tm tm;
    char stamp[40], line[MAX_ID + 256];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line,
                     "{\"level\": \"info\", \"ts\": \"%s.%03ldZ\", \"caller\": \"aws-cni\", \"msg\": \"done: "
                     "egress wired with aws-cni's ADD\", \"command\": \"ADD\", \"containerID\": \"%s\"}\n",
                     stamp, now.tv_nsec / 1000000, container_id);
    if (n > 0 && (size_t)n < sizeof line) {
        (void)write_all(fd, line, (size_t)n);
    }
}

int egress_answer(char **envp, const char *input, size_t len) {
    const char *command = env_get(envp, "CNI_COMMAND");
    if (command == NULL || strcmp(command, "ADD") != 0 || len > EGRESS_MAX_STDIN || !environment_ok(envp)) {
        return -1;
    }
    struct jdoc doc;
    char version[32], path[MAX_PATH + 1];
    struct log_target log;
    const char *pod_ifname;
    int status = -1, log_fd = 2;
    struct jbuf out = {NULL, 0, 0};
    int prev = -1;
    if (json_parse(&doc, input, len) == 0 && netconf_ok(&doc, 0, version, &log, path) &&
        json_equals(&doc, json_member(&doc, 0, "type"), "egress-cni") && entry_ok(&doc, 0, &pod_ifname) &&
        enabled(&doc, 0) && json_is(&doc, prev = json_member(&doc, 0, "prevResult"), J_OBJECT) &&
        wired(&doc, prev, version, pod_ifname) && json_emit(&doc, prev, &out) == 0 &&
        jbuf_put(&out, "\n", 1) == 0 &&
        (!log.info || log.path == NULL || (log_fd = open_log(log.path)) >= 0)) {
        /* As the shim: the result first, then the log line; a runtime that closed stdout gets status 1. */
        status = write_all(1, out.data, out.len) == 0 ? 0 : 1;
        if (status == 0 && log.info) {
            log_done(log_fd, env_get(envp, "CNI_CONTAINERID"));
        }
    }
    if (log_fd > 2) {
        close(log_fd);
    }
    free(out.data);
    json_free(&doc);
    return status;
}
