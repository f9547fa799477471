/*
 * A strict reader for a subset of JSON, for the trampoline's fast path (egressfast.c): the input becomes a
 * flat array of nodes that point into it. Anything outside the subset is refused, never guessed at, and the
 * caller then leaves the input to the Python shim, which reads all of JSON.
 *
 * The subset: printable ASCII in strings (what Python writes back as is) and no backslash escapes; integers
 * only (no fraction, no exponent, no "-0", at most 18 digits); no key twice in one object; at most 256
 * members or elements per container and 64 levels of nesting. What it reads, it reads as Python's json does,
 * and writing a node back (json_emit) gives the bytes json.dumps(..., separators=(",", ":")) gives for the
 * same value.
 */
#ifndef VPCCNI_JSONSCAN_H
#define VPCCNI_JSONSCAN_H

#include <stddef.h>

enum jtype { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT };

struct jnode {
    enum jtype type;
    size_t start, len; /* the value's bytes in the input; a string's without its quotes */
    int key;           /* for an object's member: its key (a J_STRING node), else -1 */
    int child;         /* a container's first member or element, -1 when it is empty */
    int next;          /* the next member or element of the same container, -1 after the last */
};

struct jdoc {
    const char *text;
    struct jnode *nodes;
    int count, cap;
};

/* Reads `len` bytes (one value, whitespace around it) into `doc`; returns the root node (0), or -1 when the
 * input is not JSON or not in the subset. json_free releases the nodes either way. */
int json_parse(struct jdoc *doc, const char *text, size_t len);
void json_free(struct jdoc *doc);

/* The member `key` of object node `object`; -1 when absent or `object` is not an object (or is -1). */
int json_member(const struct jdoc *doc, int object, const char *key);
/* Whether `node` exists and has type `type`. */
int json_is(const struct jdoc *doc, int node, enum jtype type);
/* Whether `node` is a string equal to `text`. */
int json_equals(const struct jdoc *doc, int node, const char *text);
/* Python's truth value of the node's value (null, false, 0, "", [] and {} are false). */
int json_truthy(const struct jdoc *doc, int node);

/* Appends the compact text of `node` to `out` (grown with realloc); returns 0, or -1 when out of memory. */
struct jbuf {
    char *data;
    size_t len, cap;
};
int json_emit(const struct jdoc *doc, int node, struct jbuf *out);
int jbuf_put(struct jbuf *out, const char *data, size_t len);

#endif
