/* tools/cmd_hf.c — placeholder until the command lands (being written this session). */
#include "tools/tools.h"

#include <stdio.h>

int cmd_import(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain import: not implemented yet\n");
    return 1;
}

int cmd_export(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tiertrain export: not implemented yet\n");
    return 1;
}

