/* snapstream — push and pull sandbox checkpoint images, and look after the
 * store they live in.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error, 3 not found,
 * 4 integrity error (corrupted or tampered data), 5 missing key, 6 wrong
 * key, 7 another store's sealed snapshot. */
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* A pull keeps each file of a snapshot open until it is verified, and
 * image directories hold many files: take the whole descriptor limit the
 * system allows. This is the program's decision, so it is made here: the
 * library never changes process-wide limits. */
static int help(struct cli *c, int argc, char **argv)
{
	if (argc > 2 && !strcmp(argv[2], "--man")) {
		cli_man(stdout);   /* how docs/snapstream.1 is made */
		return EXIT_OK;
	}
	if (argc > 2) {
		const struct command *cmd = cli_find(argv[2]);
		if (!cmd)
			return cli_usage_error(c, "no command '%s'", argv[2]);
		cli_help_cmd(stdout, cmd);
		return EXIT_OK;
	}
	cli_help_main(stdout);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	/* The library reads no environment: the CLI hands it its own, which
	 * configures the object stores (snapstream.h, ss_config.env). */
	struct cli c = {.prog = "snapstream", .cfg = SS_CONFIG_INIT};
	c.cfg.env = (const char *const *)environ;
	/* Every file of a snapshot stays open until it is verified. */
	ss_prepare_fds(8192);
	if (argc < 2)
		return cli_usage_error(&c, "missing command");
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help"))
		return help(&c, argc, argv);
	if (!strcmp(name, "--version") || !strcmp(name, "version")) {
		printf("snapstream %s\n", ss_version());
		return EXIT_OK;
	}
	c.cmd = cli_find(name);
	if (!c.cmd && name[0] == '-' && name[1])
		return cli_usage_error(&c, "option '%.*s' before the command; options follow it: "
					   "snapstream <command> [options]",
				       (int)strcspn(name, "="), name);
	if (!c.cmd)
		return cli_usage_error(&c, "unknown command '%s'", name);
	int r = cli_parse(&c, argc - 1, argv + 1);
	if (r < 0)
		r = c.cmd->run(&c);
	cli_key_wipe(&c);
	return r;
}
