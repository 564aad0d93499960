/*
 * gpurnn-charrnn: train character-level language models (vanilla RNNs with truncated
 * BPTT) on libgpurnn and sample text from them. Built only on gpurnn.h, libc and POSIX.
 *
 *   gpurnn-charrnn train [FILE] [options]       (gpurnn-charrnn --help lists them)
 *   gpurnn-charrnn sample CHECKPOINT [options]
 *
 * The modules: options (command line), corpus (the text, and the built-in one), vocab,
 * streams (the data pipeline), checkpoint (+ fileio), generate (sampling), plot (SVG),
 * console (the progress line), train and sample (the two commands).
 */
#include "commands.h"
#include "options.h"

#include <gpurnn.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    charrnn_options options;
    charrnn_error err;
    if (charrnn_parse_options(argc, argv, &options, &err) != 0) {
        fprintf(stderr, "gpurnn-charrnn: %s\n", err.message);
        return CHARRNN_EXIT_USAGE;
    }
    switch (options.command) {
    case CHARRNN_HELP:
        charrnn_print_help(stdout);
        return CHARRNN_EXIT_OK;
    case CHARRNN_VERSION:
        printf("gpurnn-charrnn (libgpurnn %s)\n", gpurnn_version());
        return CHARRNN_EXIT_OK;
    case CHARRNN_TRAIN:
        return charrnn_command_train(&options);
    case CHARRNN_SAMPLE:
        return charrnn_command_sample(&options);
    }
    return CHARRNN_EXIT_USAGE;
}
