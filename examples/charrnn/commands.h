/* The two commands of gpurnn-charrnn; each returns the program's exit status. */
#ifndef CHARRNN_COMMANDS_H
#define CHARRNN_COMMANDS_H

#include "options.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exit statuses: 0 success (also after Ctrl-C), 1 a failure at run time, 2 bad usage. */
enum { CHARRNN_EXIT_OK = 0, CHARRNN_EXIT_FAILURE = 1, CHARRNN_EXIT_USAGE = 2 };

int charrnn_command_train(const charrnn_options *options);
int charrnn_command_sample(const charrnn_options *options);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_COMMANDS_H */
