/* tools/cmd_recover.c — placeholder until the command lands (being written this session). */
#include "tools/tools.h"

#include <stdio.h>

int cmd_recover(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain recover: not implemented yet\n");
    return 1;
}

int cmd_merge(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain merge: not implemented yet\n");
    return 1;
}

