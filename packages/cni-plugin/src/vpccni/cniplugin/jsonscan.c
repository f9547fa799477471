/* The strict JSON subset reader (see jsonscan.h for the subset and why). */
#include "jsonscan.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_ITEMS 256 /* per container: bounds the duplicate-key check's quadratic walk */
#define MAX_DIGITS 18

struct parser {
    struct jdoc *doc;
    size_t pos, end;
};

static void skip_space(struct parser *p) {
    while (p->pos < p->end) {
        char c = p->doc->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

static int new_node(struct parser *p, enum jtype type, size_t start) {
    struct jdoc *doc = p->doc;
    if (doc->count == doc->cap) {
        int cap = doc->cap ? doc->cap * 2 : 64;
        struct jnode *grown = realloc(doc->nodes, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        doc->nodes = grown;
        doc->cap = cap;
    }
    struct jnode *n = &doc->nodes[doc->count];
    n->type = type;
    n->start = start;
    n->len = 0;
    n->key = n->child = n->next = -1;
    return doc->count++;
}

static int parse_value(struct parser *p, int depth);

static int parse_string(struct parser *p) {
    size_t start = ++p->pos; /* past the opening quote */
    while (p->pos < p->end) {
        unsigned char c = (unsigned char)p->doc->text[p->pos];
        if (c == '"') {
            int node = new_node(p, J_STRING, start);
            if (node >= 0) {
                p->doc->nodes[node].len = p->pos - start;
            }
            p->pos++;
            return node;
        }
        if (c < 0x20 || c > 0x7e || c == '\\') {
            return -1; /* a control character (not JSON); DEL, which Python writes as \u007f; non-ASCII */
        }
        p->pos++;
    }
    return -1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(struct parser *p) {
    const char *text = p->doc->text;
    size_t start = p->pos;
    if (text[p->pos] == '-') {
        p->pos++;
    }
    size_t digits = p->pos;
    while (p->pos < p->end && is_digit(text[p->pos])) {
        p->pos++;
    }
    size_t count = p->pos - digits;
    if (count == 0 || count > MAX_DIGITS || (count > 1 && text[digits] == '0')) {
        return -1;
    }
    if (count == 1 && text[digits] == '0' && digits != start) {
        return -1; /* -0: Python writes it back as 0 */
    }
    if (p->pos < p->end && (text[p->pos] == '.' || text[p->pos] == 'e' || text[p->pos] == 'E')) {
        return -1; /* a float: Python writes it back in its own form */
    }
    int node = new_node(p, J_NUMBER, start);
    if (node >= 0) {
        p->doc->nodes[node].len = p->pos - start;
    }
    return node;
}

static int parse_literal(struct parser *p, const char *word, enum jtype type) {
    size_t len = strlen(word);
    if (p->end - p->pos < len || memcmp(p->doc->text + p->pos, word, len) != 0) {
        return -1;
    }
    int node = new_node(p, type, p->pos);
    if (node >= 0) {
        p->doc->nodes[node].len = len;
    }
    p->pos += len;
    return node;
}

static int key_seen(const struct jdoc *doc, int container, int key) {
    const struct jnode *k = &doc->nodes[key];
    for (int m = doc->nodes[container].child; m >= 0; m = doc->nodes[m].next) {
        const struct jnode *other = &doc->nodes[doc->nodes[m].key];
        if (other->len == k->len && memcmp(doc->text + other->start, doc->text + k->start, k->len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* An array or an object: `open` is at p->pos. Items are linked in order as they are read. */
static int parse_container(struct parser *p, int depth, int object) {
    if (depth >= MAX_DEPTH) {
        return -1;
    }
    int node = new_node(p, object ? J_OBJECT : J_ARRAY, p->pos);
    if (node < 0) {
        return -1;
    }
    char close = object ? '}' : ']';
    p->pos++;
    skip_space(p);
    if (p->pos < p->end && p->doc->text[p->pos] == close) {
        p->pos++;
        p->doc->nodes[node].len = p->pos - p->doc->nodes[node].start;
        return node;
    }
    int last = -1, items = 0;
    for (;;) {
        int key = -1;
        if (object) {
            if (p->pos >= p->end || p->doc->text[p->pos] != '"' || (key = parse_string(p)) < 0) {
                return -1;
            }
            if (key_seen(p->doc, node, key)) {
                return -1; /* Python keeps the last of the two; writing both back would differ */
            }
            skip_space(p);
            if (p->pos >= p->end || p->doc->text[p->pos] != ':') {
                return -1;
            }
            p->pos++;
            skip_space(p);
        }
        int value = parse_value(p, depth + 1);
        if (value < 0 || ++items > MAX_ITEMS) {
            return -1;
        }
        p->doc->nodes[value].key = key;
        if (last < 0) {
            p->doc->nodes[node].child = value;
        } else {
            p->doc->nodes[last].next = value;
        }
        last = value;
        skip_space(p);
        if (p->pos >= p->end) {
            return -1;
        }
        char c = p->doc->text[p->pos++];
        if (c == close) {
            p->doc->nodes[node].len = p->pos - p->doc->nodes[node].start;
            return node;
        }
        if (c != ',') {
            return -1;
        }
        skip_space(p);
    }
}

static int parse_value(struct parser *p, int depth) {
    if (p->pos >= p->end) {
        return -1;
    }
    char c = p->doc->text[p->pos];
    switch (c) {
    case '{':
        return parse_container(p, depth, 1);
    case '[':
        return parse_container(p, depth, 0);
    case '"':
        return parse_string(p);
    case 't':
        return parse_literal(p, "true", J_TRUE);
    case 'f':
        return parse_literal(p, "false", J_FALSE);
    case 'n':
        return parse_literal(p, "null", J_NULL);
    default:
        return c == '-' || is_digit(c) ? parse_number(p) : -1;
    }
}

int json_parse(struct jdoc *doc, const char *text, size_t len) {
    doc->text = text;
    doc->nodes = NULL;
    doc->count = doc->cap = 0;
    struct parser p = {doc, 0, len};
    skip_space(&p);
    if (parse_value(&p, 0) != 0) {
        return -1;
    }
    skip_space(&p);
    return p.pos == p.end ? 0 : -1;
}

void json_free(struct jdoc *doc) {
    free(doc->nodes);
    doc->nodes = NULL;
    doc->count = doc->cap = 0;
}

int json_is(const struct jdoc *doc, int node, enum jtype type) {
    return node >= 0 && doc->nodes[node].type == type;
}

int json_equals(const struct jdoc *doc, int node, const char *text) {
    size_t len = strlen(text);
    return json_is(doc, node, J_STRING) && doc->nodes[node].len == len &&
           memcmp(doc->text + doc->nodes[node].start, text, len) == 0;
}

int json_member(const struct jdoc *doc, int object, const char *key) {
    if (!json_is(doc, object, J_OBJECT)) {
        return -1;
    }
    for (int m = doc->nodes[object].child; m >= 0; m = doc->nodes[m].next) {
        if (json_equals(doc, doc->nodes[m].key, key)) {
            return m;
        }
    }
    return -1;
}

int json_truthy(const struct jdoc *doc, int node) {
    if (node < 0) {
        return 0;
    }
    const struct jnode *n = &doc->nodes[node];
    switch (n->type) {
    case J_TRUE:
        return 1;
    case J_NUMBER:
        return !(n->len == 1 && doc->text[n->start] == '0'); /* the subset has no -0 and no floats */
    case J_STRING:
        return n->len > 0;
    case J_ARRAY:
    case J_OBJECT:
        return n->child >= 0;
    default:
        return 0;
    }
}

int jbuf_put(struct jbuf *out, const char *data, size_t len) {
    if (out->len + len > out->cap) {
        size_t cap = out->cap ? out->cap : 4096;
        while (cap < out->len + len) {
            cap *= 2;
        }
        char *grown = realloc(out->data, cap);
        if (grown == NULL) {
            return -1;
        }
        out->data = grown;
        out->cap = cap;
    }
    memcpy(out->data + out->len, data, len);
    out->len += len;
    return 0;
}

static int emit_string(const struct jdoc *doc, const struct jnode *n, struct jbuf *out) {
    return jbuf_put(out, "\"", 1) || jbuf_put(out, doc->text + n->start, n->len) || jbuf_put(out, "\"", 1);
}

int json_emit(const struct jdoc *doc, int node, struct jbuf *out) {
    const struct jnode *n = &doc->nodes[node];
    if (n->type == J_STRING) {
        return emit_string(doc, n, out);
    }
    if (n->type != J_ARRAY && n->type != J_OBJECT) {
        return jbuf_put(out, doc->text + n->start, n->len); /* a number or a literal, as it was read */
    }
    if (jbuf_put(out, n->type == J_OBJECT ? "{" : "[", 1)) {
        return -1;
    }
    for (int m = n->child; m >= 0; m = doc->nodes[m].next) {
        if (m != n->child && jbuf_put(out, ",", 1)) {
            return -1;
        }
        if (n->type == J_OBJECT && (emit_string(doc, &doc->nodes[doc->nodes[m].key], out) ||
                                    jbuf_put(out, ":", 1))) {
            return -1;
        }
        if (json_emit(doc, m, out)) {
            return -1;
        }
    }
    return jbuf_put(out, n->type == J_OBJECT ? "}" : "]", 1);
}
