/* tools/cmd_eval.c — placeholder until the command lands (being written this session). */
#include "tools/tools.h"

#include <stdio.h>

int cmd_eval(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain eval: not implemented yet\n");
    return 1;
}

