/*
 * egress-cni's ADD without the interpreter, for the one case that needs no decision: ipamd wired the pod's
 * egress within aws-cni's ADD and listed it in aws-cni's result, which the runtime passes on as prevResult
 * (see vpccni/cniplugin/egress.py). The answer is then prevResult itself.
 */
#ifndef VPCCNI_EGRESSFAST_H
#define VPCCNI_EGRESSFAST_H

#include <stddef.h>

/* The most stdin the shim reads (netconf.MAX_STDIN_BYTES); one byte more tells it the input is too big. */
#define EGRESS_MAX_STDIN (1 << 20)

/* With `input` (stdin) and `envp`: when the Python shim would answer this call with prevResult, prints it
 * (and logs) as the shim does and returns the exit status (0; 1 when stdout is closed). Returns -1, having
 * written nothing, for anything else (other commands, an entry or environment the shim would reject, any
 * doubt): the shim answers. */
int egress_answer(char **envp, const char *input, size_t len);

#endif
