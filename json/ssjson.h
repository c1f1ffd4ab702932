/* ssjson — the one JSON writer of the layers (the CLI's --json output and
 * ateom's log): json-c objects, plus the two things json-c leaves to its
 * caller.
 *
 * Text. json-c copies string bytes into its output unchanged, so a file
 * name that is not UTF-8 would make the output invalid UTF-8 and thereby
 * invalid JSON. Every string (and object key) that may hold outside bytes
 * goes through ssjson_string()/ssjson_add_str(), which replace each
 * ill-formed UTF-8 sequence with U+FFFD the way the Unicode standard
 * recommends ("maximal subparts", as Python's bytes.decode(errors=
 * "replace") does). The original bytes are not recoverable from the JSON.
 *
 * Numbers. json-c prints doubles as "%.17g" and NaN as NaN; ssjson_fixed()
 * prints a fixed number of decimals and null for what is not finite.
 *
 * All functions are thread-safe (they hold no state). Allocation failure is
 * reported as NULL or -ENOMEM; nothing here prints.
 */
#ifndef SS_SSJSON_H
#define SS_SSJSON_H

#include <stddef.h>
#include <stdio.h>

struct json_object;

/* Copy s into out (capacity cap, cap > 0) with every ill-formed UTF-8
 * sequence replaced by U+FFFD, always NUL-terminated. Returns the length
 * the whole result needs (excluding the NUL), as snprintf does: a result
 * >= cap was cut short, at a character boundary. s NULL reads as "". */
size_t ssjson_utf8(const char *s, char *out, size_t cap);

/* A new JSON string holding s made valid UTF-8 (see above); s NULL is "".
 * Returns a new reference, or NULL out of memory. */
struct json_object *ssjson_string(const char *s);

/* A new JSON number printed with `decimals` digits after the point, or JSON
 * null when v is NaN or infinite. Returns NULL out of memory. */
struct json_object *ssjson_fixed(double v, int decimals);

/* Add val under key to object obj, both made valid UTF-8. Takes the
 * reference to val in every case (frees it on failure); val NULL is an
 * earlier allocation failure and returns -ENOMEM. A key already present is
 * replaced. Returns 0 or -ENOMEM. */
int ssjson_add(struct json_object *obj, const char *key, struct json_object *val);
/* Append val to array arr, with the same ownership rule. */
int ssjson_append(struct json_object *arr, struct json_object *val);

/* Write o as one line of compact JSON followed by '\n' and flush f.
 * Returns 0, -ENOMEM, or -errno of the failed write. */
int ssjson_write_line(FILE *f, struct json_object *o);

#endif
