/* snapstream check: verify a store, and repair what its packs rebuild. */
#ifndef SS_CMD_CHECK_H
#define SS_CMD_CHECK_H

#include "cli.h"

/* The command's run function, as the table names it: a check without
 * --repair or --deep. */
int cmd_check(struct cli *c);

/* The whole command from argv (argv[0] is "check"): its own flags
 * --repair and --deep first, then the common options (cli_parse), then
 * the check. Returns the exit code. main() routes "check" here because
 * the common option table does not know those two flags. */
int cmd_check_main(struct cli *c, int argc, char **argv);

#endif
