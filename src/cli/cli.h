/*
 * cli.h — subcommands of bft-cli (dispatched by src/cli/main.c).
 * Each cmd_* gets argv starting at the subcommand name (argv[0] == "tokenize")
 * and returns the process exit status (0 ok, 1 failure, 2 usage error).
 *
 * Created by the tokenizer work (cmd_tokenize.c) before main.c existed; the
 * owner of main.c adds the other subcommands' declarations here.
 */
#ifndef BFT_CLI_H
#define BFT_CLI_H

/* bft-cli tokenize: stdin lines → ids per line, or --learn-vocab (cmd_tokenize.c). */
int cmd_tokenize(int argc, char **argv);

#endif
