/* tools/cmd_prune.c — placeholder until the command lands (being written this session). */
#include "tools/tools.h"

#include <stdio.h>

int cmd_prune(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain prune: not implemented yet\n");
    return 1;
}

int cmd_quantize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain quantize: not implemented yet\n");
    return 1;
}

